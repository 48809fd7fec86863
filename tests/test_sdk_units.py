"""Unit tests of the SDK's pure parts: framing, backoff, connection checks, the stream protocol."""

from __future__ import annotations

import random

import grpc
import numpy as np
import pytest
from mcrave_client import protocol
from mcrave_client.backoff import Backoff
from mcrave_client.connection import Connection, is_loopback, read_token
from mcrave_client.errors import ClientError
from mcrave_client.framing import FramingError, iter_chunks, pack, unpack
from mcrave_client.proto import encoder_pb2, stream_pb2
from mcrave_client.types import SetPresent


def test_pack_is_frame_major_little_endian_float32():
    a = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]], np.float32)  # 2 channels, 3 frames
    raw = pack(a)
    assert np.frombuffer(raw, "<f4").tolist() == [1.0, -1.0, 2.0, -2.0, 3.0, -3.0]
    np.testing.assert_array_equal(unpack(raw, 2), a)


def test_unpack_rejects_partial_frames_and_roundtrips_random():
    rng = np.random.default_rng(0)
    for channels in (1, 2, 5, 299):
        a = rng.standard_normal((channels, 17)).astype(np.float32)
        np.testing.assert_array_equal(unpack(pack(a), channels), a)
    with pytest.raises(FramingError, match="not a whole number of 2-channel"):
        unpack(b"\0" * 12, 2)
    with pytest.raises(FramingError, match="channels, frames"):
        pack(np.zeros(4, np.float32))


def test_iter_chunks_covers_everything_in_order():
    a = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
    parts = list(iter_chunks(a, 4))
    assert [p.shape[1] for p in parts] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), a)


def test_backoff_grows_caps_and_counts():
    b = Backoff(attempts=6, initial=0.1, factor=2.0, max_delay=0.5, jitter=0.0)
    assert list(b.delays()) == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    jittered = list(Backoff(attempts=4, jitter=0.2).delays(random.Random(1)))
    assert len(jittered) == 3 and all(0.08 <= d <= 0.12 * 4 for d in jittered)
    assert list(Backoff(attempts=1).delays()) == []
    with pytest.raises(ValueError):
        Backoff(attempts=0)


def test_connection_refuses_token_in_clear_off_loopback(tmp_path):
    assert is_loopback("127.0.0.1:5") and is_loopback("localhost:5") and is_loopback("[::1]:5")
    assert not is_loopback("10.1.2.3:5") and not is_loopback("example.org:5")
    Connection("127.0.0.1:5", token="t")  # loopback plaintext: allowed
    with pytest.raises(ClientError, match="plaintext"):
        Connection("example.org:5", token="t")
    with pytest.raises(ClientError, match="both a client certificate and its key"):
        Connection("example.org:5", tls_ca=tmp_path / "ca", tls_cert=tmp_path / "c")
    (tmp_path / "tok").write_text("  secret\n")
    assert read_token(tmp_path / "tok") == "secret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ClientError, match="empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(ClientError, match="cannot read"):
        read_token(tmp_path / "missing")
    assert Connection("127.0.0.1:1", token="x").metadata() == (("authorization", "Bearer x"),)


def _started(credit: int) -> encoder_pb2.EncodeResponse:
    ref = stream_pb2.ModelRef(name="m", version=1, fingerprint="f")
    return encoder_pb2.EncodeResponse(
        started=stream_pb2.StreamStarted(
            model=ref, credit=credit, latency=8, ratio=4, latent_size=3
        )
    )


def _latents(ack: int, frames: int = 1, final: bool = False) -> encoder_pb2.EncodeResponse:
    data = np.full((frames, 3), ack, "<f4").tobytes()
    return encoder_pb2.EncodeResponse(
        latents=stream_pb2.LatentChunk(seq=ack, data=data, ack=ack, final=final)
    )


def _encode_stream(credit: int) -> protocol.EncodeStream:
    s = protocol.EncodeStream(stream_pb2.StreamConfig(model="m", channels=2, present=[1]))
    s.started(_started(credit))
    return s


def test_protocol_credit_window_and_reply_order():
    s = _encode_stream(credit=2)
    chunk = np.zeros((1, 4), np.float32)
    sent = [s.requests_for(chunk) for _ in range(2)]
    assert [r[0].chunk.seq for r in sent] == [0, 1] and not s.may_send  # 2 unanswered
    first = s.result(_latents(0))
    assert s.may_send and first.array.shape == (3, 1) and first.array[0, 0] == 0
    s.requests_for(chunk)
    assert [s.result(_latents(i)).array[0, 0] for i in (1, 2)] == [1, 2] and not s.finished
    final = s.result(_latents(3, frames=2, final=True))
    assert final.final and s.finished and protocol.worth_emitting(final)
    assert not protocol.worth_emitting(s.result(_latents(4, frames=0, final=True)))


def test_protocol_present_update_goes_before_next_chunk():
    s = _encode_stream(credit=4)
    one, two = np.zeros((1, 4), np.float32), np.zeros((2, 4), np.float32)
    assert [r.WhichOneof("msg") for r in s.requests_for(one)] == ["chunk"]
    assert s.requests_for(SetPresent((0, 1))) == ()
    update, chunk = s.requests_for(two)
    assert list(update.config.present) == [0, 1] and chunk.chunk.seq == 1
    with pytest.raises(ClientError, match="does not hold the 2 present channels"):
        s.requests_for(one)


def test_protocol_fails_on_out_of_order_or_missing_final():
    s = _encode_stream(credit=2)
    s.requests_for(np.zeros((1, 4), np.float32))
    with pytest.raises(ClientError, match="acknowledges chunk 1, expected 0"):
        s.result(_latents(1))
    with pytest.raises(ClientError, match="ended before its final reply"):
        _encode_stream(4).result(None)
    with pytest.raises(ClientError, match="did not acknowledge"):
        protocol.EncodeStream(stream_pb2.StreamConfig()).started(None)


def test_rpc_errors_become_one_line_with_hints():
    from mcrave_client.errors import from_rpc_error

    class Err(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "failed to connect\nto all addresses"

        def trailing_metadata(self):
            return (("mcrave-reason", "draining"),)

    err = from_rpc_error(Err(), "encoder", "127.0.0.1:1", secure=True)
    assert "\n" not in str(err) and "encoder at 127.0.0.1:1: UNAVAILABLE" in str(err)
    assert "--tls-ca" in str(err) and err.reason == "draining"


def test_watch_shows_the_main_losses_first():
    """Alphabetical order hid the spectral loss behind adversarial/discriminator/feature losses."""
    from mcrave_client.trainer import _main_losses

    losses = {"adversarial": 1.0, "discriminator": 2.0, "feature": 3.0, "interchannel": 0.5}
    losses |= {"kl": 9.0, "loss": 7.0, "multiband": 4.0, "spectral": 5.0}
    assert _main_losses(losses).split() == [
        "loss=7",
        "spectral=5",
        "interchannel=0.5",
        "kl=9",
        "adversarial=1",
    ]


@pytest.mark.parametrize(
    ("spec", "want"),
    [("R", (1,)), ("1", (1,)), ("L,R", (0, 1)), ("ch2,L", (0, 2)), (" 2 , 0 ", (0, 2))],
)
def test_present_by_name_or_index_same_rule_as_the_core(spec, want):
    """The SDK's `--present` parser (torch-free) and the core's agree on every case."""
    from mcrave_client.channels import parse_channel_set as sdk_parse

    from mcrave.present import parse_present as core_parse

    names = ("L", "R", "ch2")
    assert sdk_parse(spec, 3, names) == core_parse(spec, 3, names) == want


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "empty"), ("X", "'X' is neither"), ("5", "out of range"), ("1,R", "given twice")],
)
def test_present_errors_name_the_token_in_both_parsers(spec, message):
    from mcrave_client.channels import parse_channel_set as sdk_parse

    from mcrave.present import parse_present as core_parse

    with pytest.raises(ClientError, match=message):
        sdk_parse(spec, 2, ("L", "R"))
    with pytest.raises(ValueError, match=message):
        core_parse(spec, 2, ("L", "R"))
