"""Bad input, 50+ seeded cases per category: exact status codes, and the server is unharmed.

One encoder and one decoder serve every case; afterwards both still report SERVING, no stream
state is left over, and a valid stream gives bit-identical output to the one run before.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mcrave_client.proto import (
    decoder_pb2,
    decoder_pb2_grpc,
    encoder_pb2,
    encoder_pb2_grpc,
    stream_pb2,
)
from services_helpers import (
    OpenStream,
    ServerThread,
    audio,
    channel,
    config,
    decode,
    encode,
    publish_tiny,
)

from services.common.limits import Limits
from services.decoder.servicer import SERVICE as DECODER
from services.encoder.servicer import SERVICE as ENCODER

CASES = 50
CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root, seed=0)
    publish_tiny(root, seed=1)  # version 2 is latest; version 1 makes mismatching latents
    enc = ServerThread(ENCODER, root, limits=Limits(max_chunk_frames=4096))
    dec = ServerThread(DECODER, root, limits=Limits(max_chunk_frames=4096))
    enc_ch, dec_ch = channel(enc.target), channel(dec.target)
    x = audio(3000, seed=11)
    _, lat_before = encode(enc.target, config(present=(1,)), x)
    _, y_before = decode(dec.target, config(present=()), lat_before)
    _, lat_v1 = encode(enc.target, config(version=1), x)
    env = {
        "enc": encoder_pb2_grpc.EncoderServiceStub(enc_ch),
        "dec": decoder_pb2_grpc.DecoderServiceStub(dec_ch),
        "lat_v1": lat_v1,
        "servers": (enc, dec),
    }
    yield env
    # the servers survived everything: still serving, nothing leaked, same results
    for server, ch in ((enc, enc_ch), (dec, dec_ch)):
        assert server._thread.is_alive()
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        deadline = time.monotonic() + 5
        while server.running.runtime.open_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.running.runtime.open_streams == 0
    _, lat_after = encode(enc.target, config(present=(1,)), x)
    _, y_after = decode(dec.target, config(present=()), lat_after)
    assert b"".join(c.data for c in lat_after) == b"".join(c.data for c in lat_before)
    assert y_after.tobytes() == y_before.tobytes()
    enc_ch.close()
    dec_ch.close()
    enc.stop()
    dec.stop()


def enc_chunk(seq: int, data: bytes) -> encoder_pb2.EncodeRequest:
    return encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=data))


def dec_chunk(seq: int, data: bytes, **origin) -> decoder_pb2.DecodeRequest:
    return decoder_pb2.DecodeRequest(chunk=stream_pb2.LatentChunk(seq=seq, data=data, **origin))


def expect(method, requests: list, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as err:
        list(method(iter(requests), timeout=10))
    assert err.value.code() == code, (err.value.code(), err.value.details())
    assert err.value.details()
    return err.value.details()


def pcm(rng: np.random.Generator, frames: int, channels: int) -> bytes:
    return rng.standard_normal((frames, channels)).astype("<f4").tobytes()


def test_no_config(env) -> None:
    for i in range(CASES):
        encoder = i % 4 < 2
        method = env["enc"].Encode if encoder else env["dec"].Decode
        empty = encoder_pb2.EncodeRequest() if encoder else decoder_pb2.DecodeRequest()
        requests = (
            [empty] * (i % 3) if i % 2 else []
        )  # an empty message first, or no message at all
        assert "config" in expect(method, requests, CODE.INVALID_ARGUMENT).lower()


def test_chunk_before_config(env) -> None:
    rng = np.random.default_rng(2)
    for i in range(CASES):
        frames = int(rng.integers(1, 4)) * 256
        if i % 2:
            expect(
                env["enc"].Encode,
                [enc_chunk(int(rng.integers(0, 3)), pcm(rng, frames, 2))],
                CODE.FAILED_PRECONDITION,
            )
        else:
            expect(
                env["dec"].Decode,
                [dec_chunk(0, pcm(rng, frames // 256, 8))],
                CODE.FAILED_PRECONDITION,
            )


def test_wrong_byte_length(env) -> None:
    rng = np.random.default_rng(3)
    for i in range(CASES):
        if i % 2:
            present = (0,) if i % 4 == 1 else (0, 1)
            row = 4 * len(present)
            n = int(rng.integers(0, 1024 * row))
            n = n + 1 if n % row == 0 else n  # never a whole frame count ...
            n = 0 if i % 10 == 1 else n  # ... or nothing at all
            requests = [
                encoder_pb2.EncodeRequest(config=config(present=present)),
                enc_chunk(0, bytes(n)),
            ]
            expect(env["enc"].Encode, requests, CODE.INVALID_ARGUMENT)
        else:
            n = int(rng.integers(1, 4 * 8 * 4))
            n = n + 1 if n % 32 == 0 else n
            expect(
                env["dec"].Decode,
                [decoder_pb2.DecodeRequest(config=config(present=())), dec_chunk(0, bytes(n))],
                CODE.INVALID_ARGUMENT,
            )


def test_present_audio_wrong_missing_or_unexpected(env) -> None:
    """The audio beside the latents: f32le [frames x ratio, |present|] exactly when the decoder
    config declared a present set (a `final` chunk may stop early); anything else is refused."""
    rng = np.random.default_rng(12)
    reasons = set()
    for i in range(CASES):
        frames = int(rng.integers(1, 5))  # latent frames (tiny: ratio 256, latent_size 8)
        kind = i % 5
        present = () if kind == 0 else (1,) if i % 2 else (0, 1)
        row = 4 * len(present)
        chunk = stream_pb2.LatentChunk(seq=0, data=pcm(rng, frames, 8))
        if kind == 0:  # audio on a latent-only stream
            chunk.audio = pcm(rng, frames * 256, 2)
        elif kind == 1:  # a spatial stream's chunk without audio (and not the final flush)
            pass
        elif kind == 2:  # not a whole number of frames
            n = int(rng.integers(1, frames * 256 * row))
            chunk.audio = bytes(n + 1 if n % row == 0 else n)
        elif kind == 3:  # whole frames, but not frames x ratio (too short or too long)
            wrong = frames * 256 + int(rng.choice([-1, 1])) * int(rng.integers(1, 256))
            chunk.audio = bytes(wrong * row)
        else:  # even a final chunk may not carry more than frames x ratio
            chunk.audio = bytes((frames * 256 + int(rng.integers(1, 300))) * row)
            chunk.final = True
        requests = [
            decoder_pb2.DecodeRequest(config=config(present=present)),
            decoder_pb2.DecodeRequest(chunk=chunk),
        ]
        with pytest.raises(grpc.RpcError) as err:
            list(env["dec"].Decode(iter(requests), timeout=10))
        assert err.value.code() == CODE.INVALID_ARGUMENT, err.value.details()
        assert "audio" in err.value.details()
        reasons.add(dict(err.value.trailing_metadata())["mcrave-reason"])
    assert reasons == {"unexpected-audio", "missing-audio", "bad-length"}
    # the same on DecodeClip: audio without a present set
    request = decoder_pb2.DecodeClipRequest(
        config=config(present=(), chunk=0),
        latents=stream_pb2.LatentChunk(data=pcm(rng, 4, 8), audio=pcm(rng, 1024, 1)),
    )
    with pytest.raises(grpc.RpcError) as err:
        env["dec"].DecodeClip(request, timeout=10)
    assert err.value.code() == CODE.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata())["mcrave-reason"] == "unexpected-audio"


def test_nan_inf(env) -> None:
    rng = np.random.default_rng(4)
    for i in range(CASES):
        bad = [np.nan, np.inf, -np.inf][i % 3]
        if i % 2:
            x = rng.standard_normal((1024, 2)).astype("<f4")
            x[rng.integers(0, 1024), rng.integers(0, 2)] = bad
            requests = [
                encoder_pb2.EncodeRequest(config=config()),
                enc_chunk(0, pcm(rng, 1024, 2)),
                enc_chunk(1, x.tobytes()),
            ]
            assert "NaN or Inf" in expect(env["enc"].Encode, requests, CODE.INVALID_ARGUMENT)
        else:
            z = rng.standard_normal((4, 8)).astype("<f4")
            z[rng.integers(0, 4), rng.integers(0, 8)] = bad
            requests = [
                decoder_pb2.DecodeRequest(config=config(present=())),
                dec_chunk(0, z.tobytes()),
            ]
            expect(env["dec"].Decode, requests, CODE.INVALID_ARGUMENT)


def test_huge_chunk(env) -> None:
    rng = np.random.default_rng(5)
    for i in range(CASES):
        if i % 10 == 0:  # larger than any message the server accepts: gRPC itself refuses it
            big = bytes(Limits().max_message_bytes + 1024)
            requests = [encoder_pb2.EncodeRequest(config=config()), enc_chunk(0, big)]
            expect(env["enc"].Encode, requests, CODE.RESOURCE_EXHAUSTED)
        elif i % 3 == 0:  # a config asking for chunks above the server limit
            chunk = 4096 + 256 * int(rng.integers(1, 64))
            assert "at most 4096" in expect(
                env["enc"].Encode,
                [encoder_pb2.EncodeRequest(config=config(chunk=chunk))],
                CODE.INVALID_ARGUMENT,
            )
        elif i % 3 == 1:  # more frames than the stream's chunk_frames
            frames = 1024 + int(rng.integers(1, 4000))
            requests = [encoder_pb2.EncodeRequest(config=config()), enc_chunk(0, bytes(frames * 8))]
            expect(env["enc"].Encode, requests, CODE.INVALID_ARGUMENT)
        else:
            frames = 4 + int(rng.integers(1, 100))  # latent frames x ratio > chunk_frames
            requests = [
                decoder_pb2.DecodeRequest(config=config(present=())),
                dec_chunk(0, bytes(frames * 32)),
            ]
            expect(env["dec"].Decode, requests, CODE.INVALID_ARGUMENT)


def test_unknown_model_or_version(env) -> None:
    rng = np.random.default_rng(6)
    for i in range(CASES):
        cfg = config(model=f"nope{i}") if i % 2 else config(version=int(rng.integers(3, 10**6)))
        if i % 4 < 2:
            expect(env["enc"].Encode, [encoder_pb2.EncodeRequest(config=cfg)], CODE.NOT_FOUND)
        else:
            cfg.ClearField("present")
            expect(env["dec"].Decode, [decoder_pb2.DecodeRequest(config=cfg)], CODE.NOT_FOUND)


def test_bad_present_set(env) -> None:
    rng = np.random.default_rng(7)
    for i in range(CASES):
        kind = i % 5
        present = [
            [],
            [int(rng.integers(2, 300))],
            [1, 0],
            [1, 1],
            [0, int(rng.integers(2, 50))],
        ][kind]
        cfg = config()
        cfg.ClearField("present")
        cfg.present.extend(present)
        if i % 2:  # at stream start
            requests = [encoder_pb2.EncodeRequest(config=cfg)]
        else:  # as a mid-stream update
            update = stream_pb2.StreamConfig(present=present)
            requests = [
                encoder_pb2.EncodeRequest(config=config()),
                enc_chunk(0, pcm(rng, 1024, 2)),
                encoder_pb2.EncodeRequest(config=update),
            ]
        assert "present" in expect(env["enc"].Encode, requests, CODE.INVALID_ARGUMENT)
    # a decoder's present set (the channels whose audio comes along) follows the same rules
    for present in ([1, 0], [0, 7]):
        cfg = config()
        cfg.ClearField("present")
        cfg.present.extend(present)
        details = expect(
            env["dec"].Decode, [decoder_pb2.DecodeRequest(config=cfg)], CODE.INVALID_ARGUMENT
        )
        assert "present" in details


def test_sequence_gaps(env) -> None:
    rng = np.random.default_rng(8)
    for i in range(CASES):
        good = int(rng.integers(0, 3))
        wrong = (
            good + int(rng.integers(1, 1000)) if i % 3 else max(0, good - 1) if good else good + 2
        )
        if i % 2:
            requests = [encoder_pb2.EncodeRequest(config=config())]
            requests += [enc_chunk(s, pcm(rng, 256, 2)) for s in range(good)] + [
                enc_chunk(wrong, pcm(rng, 256, 2))
            ]
            assert "sequence gap" in expect(env["enc"].Encode, requests, CODE.FAILED_PRECONDITION)
        else:
            requests = [decoder_pb2.DecodeRequest(config=config(present=()))]
            requests += [dec_chunk(s, pcm(rng, 1, 8)) for s in range(good)] + [
                dec_chunk(wrong, pcm(rng, 1, 8))
            ]
            expect(env["dec"].Decode, requests, CODE.FAILED_PRECONDITION)


def _slots_freed(server: ServerThread, within_s: float = 5.0) -> bool:
    """Whether the server holds no stream (a cancel reaches it a moment after the client)."""
    deadline = time.monotonic() + within_s
    while server.running.runtime.open_streams and time.monotonic() < deadline:
        time.sleep(0.005)
    return server.running.runtime.open_streams == 0


def test_abrupt_cancel(env) -> None:
    """Each cancelled stream gives its slot back (checked after every case, not just at the end:
    a leak would otherwise hide until the stream limit)."""
    rng = np.random.default_rng(9)
    for i in range(CASES):
        sent = int(rng.integers(0, 4))
        server = env["servers"][i % 2 == 0]
        if i % 2:
            stream = OpenStream(env["enc"].Encode)
            requests = [encoder_pb2.EncodeRequest(config=config())]
            requests += [enc_chunk(s, pcm(rng, 1024, 2)) for s in range(sent)]
        else:
            stream = OpenStream(env["dec"].Decode)
            requests = [decoder_pb2.DecodeRequest(config=config(present=()))]
            requests += [dec_chunk(s, pcm(rng, 4, 8)) for s in range(sent)]
        for r in requests:
            stream.send(r)
        for _ in range(int(rng.integers(0, sent + 2))):  # cancel before, during or after replies
            stream.recv()
        stream.cancel()
        with pytest.raises(grpc.RpcError) as err:
            stream.recv()
        assert err.value.code() == CODE.CANCELLED
        assert _slots_freed(server), f"case {i}: the cancelled stream kept its slot"
        assert server.sample("mcrave_active_streams", {"model": "tiny"}) == 0


def test_version_mismatch(env) -> None:
    rng = np.random.default_rng(10)
    lat_v1 = env["lat_v1"]
    for i in range(CASES):
        c = stream_pb2.LatentChunk()
        c.CopyFrom(lat_v1[int(rng.integers(0, len(lat_v1)))])
        c.seq = 0
        kind = i % 3
        if kind == 1:
            c.version, c.fingerprint = 2, "0" * 64  # right version, other weights
        elif kind == 2:
            c.model = f"other{i}"
        requests = [
            decoder_pb2.DecodeRequest(config=config(present=())),
            decoder_pb2.DecodeRequest(chunk=c),
        ]
        assert "version" in expect(env["dec"].Decode, requests, CODE.FAILED_PRECONDITION)
    # an encoder stream keeps its version: changing it mid-stream is refused too
    update = stream_pb2.StreamConfig(version=1, present=[0, 1])
    expect(
        env["enc"].Encode,
        [encoder_pb2.EncodeRequest(config=config()), encoder_pb2.EncodeRequest(config=update)],
        CODE.FAILED_PRECONDITION,
    )
