"""Relay (stream.proto's `Relay`): the encoder forwards latents straight to the decoder stream the
client reads. Outputs equal the unrelayed pipeline; every misuse ends with a clear status and
frees the slots on both servers."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import numpy as np
import pytest
from mcrave_client import DecoderClient, EncoderClient, Pipeline, SetPresent
from mcrave_client.aio import AsyncDecoderClient, AsyncEncoderClient, AsyncPipeline
from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError
from mcrave_client.proto import (
    decoder_pb2,
    decoder_pb2_grpc,
    encoder_pb2,
    encoder_pb2_grpc,
    stream_pb2,
)
from services_helpers import OpenStream, ServerThread, audio, channel, config, publish_tiny

from services import cli
from services.common.errors import REASON_KEY
from services.common.limits import Limits
from services.decoder.servicer import SERVICE as DECODER
from services.encoder.relay import RelayLinks
from services.encoder.servicer import SERVICE as ENCODER

TOKEN = "t" * 24
CHUNK = 1024


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root, seed=0)
    dec = ServerThread(DECODER, root, limits=Limits(first_chunk_timeout_s=1.0))
    enc = ServerThread(ENCODER, root, relay_to=(Connection(dec.target),))
    plain = ServerThread(ENCODER, root)  # relays nowhere
    yield root, enc, dec, plain
    for server in (enc, dec, plain):
        server.stop()


def wait_closed(*servers: ServerThread, timeout: float = 5.0) -> None:
    """Every stream slot of `servers` is free again (slots are freed as the calls end)."""
    deadline = time.monotonic() + timeout
    while any(s.running.runtime.open_streams for s in servers):
        assert time.monotonic() < deadline, [s.running.runtime.open_streams for s in servers]
        time.sleep(0.02)


def items(x: np.ndarray) -> list:
    """Chunks of channel 1, then (from the third chunk) of both channels: a present change."""
    out: list = []
    for i, start in enumerate(range(0, x.shape[1], CHUNK)):
        if i == 2:
            out.append(SetPresent((0, 1)))
        out.append(x[(1,) if i < 2 else (0, 1), start : start + CHUNK])
    return out


@pytest.mark.parametrize("latent_only", [False, True])
def test_relayed_pipeline_equals_direct(servers, latent_only) -> None:
    _, enc, dec, _ = servers
    x = audio(9000).T.copy()  # ragged end: zero-padded audio and the tail flush are relayed too
    with Pipeline(EncoderClient(enc.target), DecoderClient(dec.target)) as pipeline:
        outputs = []
        for relay in (False, True):
            stream = pipeline.stream("tiny", (1,), CHUNK, latent_only=latent_only, relay=relay)
            outputs.append(np.concatenate([b.audio for b in stream.run(items(x))], axis=1))
    assert outputs[1].shape == outputs[0].shape and outputs[0].shape[1] > 9000  # + the flush
    assert np.array_equal(outputs[0], outputs[1])
    wait_closed(enc, dec)


def test_async_relayed_pipeline_equals_direct(servers) -> None:
    _, enc, dec, _ = servers
    x = audio(6144).T.copy()

    async def run(relay: bool) -> np.ndarray:
        pipeline = AsyncPipeline(AsyncEncoderClient(enc.target), AsyncDecoderClient(dec.target))
        try:
            stream = await pipeline.stream("tiny", (1,), CHUNK, relay=relay)
            return np.concatenate([b.audio async for b in stream.run(items(x))], axis=1)
        finally:
            await pipeline.close()

    assert np.array_equal(asyncio.run(run(False)), asyncio.run(run(True)))
    wait_closed(enc, dec)


def status(error: ClientError | grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, ClientError):
        return error.code, str(error)
    reason = dict(error.trailing_metadata() or ()).get(REASON_KEY, "")
    return error.code(), f"{reason}: {error.details()}"


def test_encoder_refuses_relays_it_may_not_make(servers) -> None:
    _, enc, dec, plain = servers
    x = audio(2048).T.copy()
    cases = (
        (plain, True, grpc.StatusCode.FAILED_PRECONDITION, "--relay-to"),
        (enc, "10.0.0.1:50052", grpc.StatusCode.PERMISSION_DENIED, dec.target),
    )
    for encoder, relay, code, says in cases:
        with Pipeline(EncoderClient(encoder.target), DecoderClient(dec.target)) as pipeline:
            with pytest.raises(ClientError) as caught:
                stream = pipeline.stream("tiny", (1,), CHUNK, relay=relay)
                list(stream.run([x[1:, :CHUNK]]))
        assert caught.value.code == code and says in str(caught.value)
    wait_closed(enc, dec, plain)


def raw_relay(target: str, requests: list) -> grpc.RpcError:
    with channel(target) as ch, pytest.raises(grpc.RpcError) as caught:
        decoder_pb2_grpc.DecoderServiceStub(ch).Relay(iter(requests), timeout=10)
    return caught.value


def relayed_config(token: str = TOKEN, **relay) -> stream_pb2.StreamConfig:
    cfg = config(present=(1,), chunk=CHUNK)
    cfg.relay.CopyFrom(stream_pb2.Relay(token=token, **relay))
    return cfg


def test_bad_relays_are_refused(servers) -> None:
    _, enc, dec, _ = servers
    join = decoder_pb2.DecodeRequest(config=relayed_config())
    code, text = status(raw_relay(dec.target, [join]))
    assert code == grpc.StatusCode.NOT_FOUND and text.startswith("relay-not-found")
    code, text = status(raw_relay(dec.target, [decoder_pb2.DecodeRequest(config=config())]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith("bad-relay")
    with channel(enc.target) as ch:
        stub = encoder_pb2_grpc.EncoderServiceStub(ch)
        for cfg, expected in (
            (relayed_config("short"), "bad-relay"),
            (relayed_config(decoder=dec.target), None),  # fine: then an update sets relay
        ):
            stream = OpenStream(stub.Encode, timeout=10)
            stream.send(encoder_pb2.EncodeRequest(config=cfg))
            if expected is None:
                assert stream.recv().WhichOneof("msg") == "started"
                stream.send(encoder_pb2.EncodeRequest(config=relayed_config(decoder=dec.target)))
                expected = "config-change"
            with pytest.raises(grpc.RpcError) as caught:
                stream.recv()
            assert status(caught.value)[1].startswith(expected)
    with channel(dec.target) as ch:
        stream = OpenStream(decoder_pb2_grpc.DecoderServiceStub(ch).Decode, timeout=10)
        stream.send(decoder_pb2.DecodeRequest(config=relayed_config(decoder=dec.target)))
        with pytest.raises(grpc.RpcError) as caught:
            stream.recv()
    assert status(caught.value)[1].startswith("bad-relay")
    wait_closed(enc, dec)


def open_reader(ch: grpc.Channel, token: str = TOKEN) -> OpenStream:
    stream = OpenStream(decoder_pb2_grpc.DecoderServiceStub(ch).Decode, timeout=30)
    stream.send(decoder_pb2.DecodeRequest(config=relayed_config(token)))
    assert stream.recv().WhichOneof("msg") == "started"
    return stream


def test_reader_waits_only_for_its_feeder(servers) -> None:
    """No encoder joins: DEADLINE_EXCEEDED after the first-chunk limit. The reader's client sends
    a chunk: FAILED_PRECONDITION. Both free the slot at once."""
    _, _, dec, _ = servers
    with channel(dec.target) as ch:
        reader = open_reader(ch)
        with pytest.raises(grpc.RpcError) as caught:
            reader.recv()
        assert status(caught.value)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "relay-timeout" in status(caught.value)[1]
        wait_closed(dec)
        reader = open_reader(ch)
        reader.send(decoder_pb2.DecodeRequest(chunk=stream_pb2.LatentChunk(seq=0)))
        with pytest.raises(grpc.RpcError) as caught:
            reader.recv()
        assert status(caught.value)[1].startswith("relay-reader-sends")
    wait_closed(dec)


def test_feeder_error_reaches_the_reader(servers) -> None:
    """A bad chunk from the feeder fails the Relay call and the reader's stream with one status."""
    _, _, dec, _ = servers
    with channel(dec.target) as ch:
        reader = open_reader(ch)
        bad = stream_pb2.LatentChunk(seq=0, data=b"\0" * 12)  # not a whole latent frame
        join = decoder_pb2.DecodeRequest(config=relayed_config())
        code, text = status(raw_relay(dec.target, [join, decoder_pb2.DecodeRequest(chunk=bad)]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith("bad-length")
        with pytest.raises(grpc.RpcError) as caught:
            reader.recv()
        assert status(caught.value) == (code, text)
    wait_closed(dec)


def open_relay(dch: grpc.Channel, ech: grpc.Channel, decoder: str) -> tuple:
    """A relay reader on the decoder and the encoder stream that feeds it, both started."""
    reader = open_reader(dch)
    encoder = OpenStream(encoder_pb2_grpc.EncoderServiceStub(ech).Encode, timeout=30)
    encoder.send(encoder_pb2.EncodeRequest(config=relayed_config(decoder=decoder)))
    assert encoder.recv().WhichOneof("msg") == "started"
    return reader, encoder


def test_reader_cancel_ends_the_encoder_stream(servers) -> None:
    """The client reading the decoded audio goes away: the encoder's stream ends with
    `relay-gone` at its next chunk, and both servers free their slots."""
    _, enc, dec, _ = servers
    x = audio(4 * CHUNK)
    with channel(dec.target) as dch, channel(enc.target) as ech:
        reader, encoder = open_relay(dch, ech, dec.target)

        def chunk(seq: int) -> encoder_pb2.EncodeRequest:
            pcm = np.ascontiguousarray(x[seq * CHUNK : (seq + 1) * CHUNK, [1]]).tobytes()
            return encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=pcm))

        encoder.send(chunk(0))
        assert reader.recv().audio.ack == 0  # relayed: the reply reaches the reader
        reader.cancel()
        wait_closed(dec)
        encoder.send(chunk(1))  # forwarded; the decoder refuses it and ends the Relay call
        time.sleep(0.2)
        encoder.send(chunk(2))  # finds the Relay call ended
        with pytest.raises(grpc.RpcError) as caught:
            encoder.recv()
        assert "relay-gone" in status(caught.value)[1]
    wait_closed(enc, dec)


def test_encoder_failure_ends_the_reader(servers) -> None:
    """The encoder's stream fails mid-relay (here: a malformed chunk, so the end is deterministic;
    a cancel may first look like the input's end to the server, and then flushes cleanly): the
    reader ends with UNAVAILABLE `relay-lost` (retryable), and both servers free their slots."""
    _, enc, dec, _ = servers
    x = audio(2 * CHUNK)
    with channel(dec.target) as dch, channel(enc.target) as ech:
        reader, encoder = open_relay(dch, ech, dec.target)
        pcm = np.ascontiguousarray(x[:CHUNK, [1]]).tobytes()
        encoder.send(encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=0, pcm=pcm)))
        assert reader.recv().audio.ack == 0
        encoder.send(encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=1, pcm=b"bad")))
        with pytest.raises(grpc.RpcError) as caught:
            encoder.recv()
        assert status(caught.value)[0] == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            reader.recv()
        code, text = status(caught.value)
        assert code == grpc.StatusCode.UNAVAILABLE and text.startswith("relay-lost")
    wait_closed(enc, dec)


def test_relay_to_is_an_encoder_option(tmp_path, capsys) -> None:
    argv = ["serve", "decoder", "--models", str(tmp_path), "--relay-to", "127.0.0.1:50052"]
    assert cli.main(argv) == 2
    assert "--relay-to is an encoder option" in capsys.readouterr().err


def test_client_cli_relays(servers, tmp_path) -> None:
    """`mcrave-client infer --relay` writes what the direct pipeline writes."""
    import soundfile
    from mcrave_client.cli import main as client_main

    _, enc, dec, _ = servers
    source = tmp_path / "in.wav"
    soundfile.write(source, audio(7000), 44100, subtype="FLOAT")
    args = ["infer", str(source), "--present", "1", "--encoder", enc.target, "--quiet"]
    outputs = []
    for name, relay in (("direct.wav", ()), ("relayed.wav", ("--relay",))):
        assert (
            client_main(
                [*args[:2], str(tmp_path / name), *args[2:], "--decoder", dec.target, *relay]
            )
            == 0
        )
        outputs.append(soundfile.read(tmp_path / name, dtype="float32")[0])
    assert np.array_equal(*outputs)
    wait_closed(enc, dec)


def test_relay_to_a_decoder_that_wants_a_token(servers, tmp_path) -> None:
    """The encoder presents its own --relay-token-file to the decoder; without it the decoder
    refuses the Relay call and the client hears why."""
    root = servers[0]
    secret = "relay-secret-" + "x" * 16
    (tmp_path / "token").write_text(secret)
    dec = ServerThread(DECODER, root, token_file=str(tmp_path / "token"))
    with_token = ServerThread(ENCODER, root, relay_to=(Connection(dec.target, token=secret),))
    without = ServerThread(ENCODER, root, relay_to=(Connection(dec.target),))
    x = audio(4096).T.copy()
    chunks = [x[1:, i : i + CHUNK] for i in range(0, x.shape[1], CHUNK)]
    try:
        outputs = []
        for encoder, relay in ((with_token, False), (with_token, True)):
            decoder = DecoderClient(dec.target, token=secret)
            with Pipeline(EncoderClient(encoder.target), decoder, relay=relay) as pipeline:
                stream = pipeline.stream("tiny", (1,), CHUNK)
                outputs.append(np.concatenate([b.audio for b in stream.run(chunks)], axis=1))
        assert np.array_equal(*outputs)
        decoder = DecoderClient(dec.target, token=secret)
        with Pipeline(EncoderClient(without.target), decoder, relay=True) as pipeline:
            stream = pipeline.stream("tiny", (1,), CHUNK)
            with pytest.raises(ClientError) as caught:
                list(stream.run(chunks))
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "relay to decoder" in str(caught.value)
        wait_closed(dec, with_token, without)
    finally:
        for server in (with_token, without, dec):
            server.stop()


def established_to(port: int) -> set[int]:
    """Local ports of this machine's established TCP connections to `port` (/proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                    found.add(int(local.rsplit(":", 1)[1], 16))
    return found


def test_stopping_an_encoder_closes_its_relay_connections(servers) -> None:
    root = servers[0]
    # a decoder of its own: gRPC shares connections between channels of one process, so another
    # encoder relaying to the same decoder would keep the connection up
    dec = ServerThread(DECODER, root)
    enc = ServerThread(ENCODER, root, relay_to=(Connection(dec.target),))
    try:
        with Pipeline(EncoderClient(enc.target), DecoderClient(dec.target), relay=True) as pipeline:
            x = audio(2 * CHUNK).T.copy()
            list(pipeline.stream("tiny", (1,), CHUNK, relay=True).run([x[(1,), :CHUNK]]))
        relay = established_to(dec.port)  # the relay's (the client's has closed) or none
        enc.stop()
        assert relay, "the relayed stream left no connection to the decoder"
        deadline = time.monotonic() + 5
        while established_to(dec.port) & relay:
            assert time.monotonic() < deadline, "the stopped encoder kept its relay connection"
            time.sleep(0.05)
    finally:
        dec.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_relay_goes_to_the_address_the_decoder_advertises(servers) -> None:
    """Behind a load balancer the client dials a shared name and the decoder that takes the stream
    advertises its own address; the encoder admits it by pattern and dials it. Here the client
    dials 127.0.0.1:P and the decoder advertises localhost:P."""
    root = servers[0]
    port = free_port()
    dec = ServerThread(DECODER, root, port=port, advertise=f"localhost:{port}")
    by_pattern = ServerThread(ENCODER, root, relay_to=(Connection(f"local*:{port}"),))
    by_dialled_name = ServerThread(ENCODER, root, relay_to=(Connection(dec.target),))
    try:
        x = audio(3 * CHUNK).T.copy()
        outputs = []
        for enc, relay in ((by_pattern, False), (by_pattern, True)):
            with Pipeline(EncoderClient(enc.target), DecoderClient(dec.target)) as pipeline:
                stream = pipeline.stream("tiny", (1,), CHUNK, relay=relay)
                outputs.append(np.concatenate([b.audio for b in stream.run(items(x))], axis=1))
        assert np.array_equal(outputs[0], outputs[1])
        # the advertised name is what the encoder is asked for, not the one the client dialled
        with Pipeline(EncoderClient(by_dialled_name.target), DecoderClient(dec.target)) as pipeline:
            with pytest.raises(ClientError) as caught:
                list(pipeline.stream("tiny", (1,), CHUNK, relay=True).run(items(x)))
        code, text = status(caught.value)
        assert code == grpc.StatusCode.PERMISSION_DENIED and f"'localhost:{port}'" in text
        wait_closed(by_pattern, by_dialled_name, dec)
    finally:
        for server in (by_pattern, by_dialled_name, dec):
            server.stop()


@pytest.mark.parametrize(
    "pattern, address, admitted",
    [
        ("*.dec.ns.svc.cluster.local:50052", "pod-1.dec.ns.svc.cluster.local:50052", True),
        ("*.dec.ns.svc.cluster.local:50052", "POD-1.DEC.ns.svc.cluster.local:50052", True),
        ("*.dec.ns.svc.cluster.local:50052", "a.b.dec.ns.svc.cluster.local:50052", False),
        ("*.dec.ns.svc.cluster.local:50052", "pod.dec.ns.svc.cluster.local:50053", False),
        ("local*:*", "localhost:1", True),
        ("local*:*", "localhost.evil.example:1", False),  # `*` never crosses a dot
        ("decoder-?:50052", "decoder-1:50052", True),
        ("decoder-?:50052", "decoder-1.evil.com:50052", False),
        ("*:*", "unix:50052", False),  # gRPC would dial a socket file
        ("*:*", "[::1]:50052", False),  # nor a colon
    ],
)
def test_relay_patterns_match_within_dns_labels(pattern, address, admitted) -> None:
    links = RelayLinks([Connection(pattern)])
    assert (links._by_pattern(address) is not None) == admitted


def test_relay_patterns_admit_only_plain_addresses_they_match(servers) -> None:
    root = servers[0]
    enc = ServerThread(ENCODER, root, relay_to=(Connection("local*:*"),))
    asked = [
        "evil.example:1",
        "localhost:1/x",
        "localhost:12345 ",
        "user@localhost:1",
        "localhost.x:1",
    ]
    try:
        with channel(enc.target) as ch:
            for address in asked:
                stream = OpenStream(encoder_pb2_grpc.EncoderServiceStub(ch).Encode, timeout=10)
                stream.send(encoder_pb2.EncodeRequest(config=relayed_config(decoder=address)))
                with pytest.raises(grpc.RpcError) as caught:
                    stream.recv()
                code, text = status(caught.value)
                assert code == grpc.StatusCode.PERMISSION_DENIED, address
                assert text.startswith("relay-target"), address
        wait_closed(enc)
    finally:
        enc.stop()


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["encoder", "--advertise", "a:1"], "decoder option"),
        (["decoder", "--advertise", "no-port"], "expected HOST:PORT"),
    ],
)
def test_advertise_is_checked_on_the_command_line(tmp_path, capsys, argv, problem) -> None:
    assert cli.main(["serve", *argv, "--models", str(tmp_path)]) == 2
    assert problem in capsys.readouterr().err
