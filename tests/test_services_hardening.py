"""Hardening of the servers built by services.common.server.build_server (issue 12 item 3): idle
limits free a stream's slot, per-peer and concurrent-call caps, keepalive and the ping-strike
policy on the wire (raw HTTP/2 frames), /metrics on loopback / over HTTPS / off, reflection off.
Limits are set short here (0.5 s); the defaults (30 s / 60 s) are far above a real-time stream's
chunk period."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mcrave_client.proto import (
    encoder_pb2,
    encoder_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    stream_pb2,
)
from sdk_helpers import make_pki
from services_helpers import OpenStream, ServerThread, audio, channel, config, publish_tiny

from services.common.limits import Limits
from services.encoder.servicer import SERVICE as ENCODER
from services.trainer.server import TrainerConfig, start_trainer

CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root)
    return root


def _chunk(seq: int) -> encoder_pb2.EncodeRequest:
    pcm = audio(1024, seed=seq).tobytes()
    return encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=pcm))


def _open(stub: encoder_pb2_grpc.EncoderServiceStub) -> OpenStream:
    stream = OpenStream(stub.Encode, timeout=10)  # a regression fails instead of hanging
    stream.send(encoder_pb2.EncodeRequest(config=config(chunk=1024)))
    return stream


def _refused(stream: OpenStream) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stream.recv()
    return err.value


def test_idle_streams_are_cut_and_free_their_slot(models) -> None:
    """Before this change a stream that sent its config and then nothing held its slot for as
    long as the client stayed connected; with one slot nobody else could stream."""
    limits = Limits(max_streams=1, first_chunk_timeout_s=0.5, idle_timeout_s=0.5)
    enc = ServerThread(ENCODER, models, limits=limits)
    try:
        with channel(enc.target) as ch:
            stub = encoder_pb2_grpc.EncoderServiceStub(ch)
            silent = _open(stub)
            silent.recv()  # started: the only slot is taken
            err = _refused(silent)
            assert err.code() == CODE.DEADLINE_EXCEEDED, err
            assert "--first-chunk-timeout" in err.details() and "0.5 s" in err.details()
            assert dict(err.trailing_metadata())["mcrave-reason"] == "idle-timeout"
            paused = _open(stub)  # the slot is free again
            paused.recv()
            paused.send(_chunk(0))
            assert paused.recv().latents.ack == 0
            err = _refused(paused)  # then nothing more: the between-chunks limit
            assert err.code() == CODE.DEADLINE_EXCEEDED and "--idle-timeout" in err.details()
            assert enc.running.runtime.open_streams == 0
            assert enc.sample("mcrave_active_streams", {"model": "tiny"}) == 0
    finally:
        enc.stop()


def _stream_opens(stub: encoder_pb2_grpc.EncoderServiceStub, within_s: float = 5.0) -> bool:
    """Whether a new stream is accepted within `within_s` (a cancel frees its place at once on
    the client, a moment later on the server)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        stream = _open(stub)
        try:
            return stream.recv().HasField("started")
        except grpc.RpcError as err:
            if err.code() != CODE.RESOURCE_EXHAUSTED:
                raise
            time.sleep(0.02)
        finally:
            stream.cancel()
    return False


def test_streams_per_peer_and_concurrent_calls_are_capped(models) -> None:
    limits = Limits(max_streams=2, max_streams_per_peer=1, max_rpcs=2)
    enc = ServerThread(ENCODER, models, limits=limits)
    try:
        with channel(enc.target) as ch, channel(enc.target) as other:
            stub = encoder_pb2_grpc.EncoderServiceStub(ch)
            first = _open(stub)
            first.recv()
            # another connection from the same address is the same client
            err = _refused(_open(encoder_pb2_grpc.EncoderServiceStub(other)))
            assert err.code() == CODE.RESOURCE_EXHAUSTED and "per-client" in err.details(), err
            # two calls open (the stream and a health watch): a third call is refused by gRPC
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as listing:
                models_pb2_grpc.ModelServiceStub(ch).ListModels(models_pb2.ListModelsRequest())
            assert listing.value.code() == CODE.RESOURCE_EXHAUSTED
            watch.cancel()
            first.cancel()
            assert _stream_opens(stub), "the cancelled calls kept their places"
    finally:
        enc.stop()


# ---- transport: raw HTTP/2 frames (a gRPC client answers pings itself, so it cannot show them)
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY, _ACK = 4, 6, 7, 1
_ENHANCE_YOUR_CALM = 0xB


def _frame(kind: int, flags: int = 0, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + bytes(4) + payload


def _frames(sock: socket.socket, until: float, stop: int) -> list[tuple[int, int, bytes]]:
    """Frames received until one of kind `stop` arrives (or `until` seconds pass)."""
    sock.settimeout(0.05)
    buf, out, end = b"", [], time.monotonic() + until
    while time.monotonic() < end and not any(f[0] == stop for f in out):
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        buf += data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            size = int.from_bytes(buf[:3], "big")
            out.append((buf[3], buf[4], buf[9 : 9 + size]))
            buf = buf[9 + size :]
    return out


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_PREFACE + _frame(_SETTINGS) + _frame(_SETTINGS, _ACK))
    return sock


def _check_transport(port: int) -> None:
    with _connect(port) as idle:  # keepalive: the server pings an idle connection
        pings = [f for f in _frames(idle, 5.0, _PING) if f[0] == _PING and not f[1] & _ACK]
        assert pings, "no keepalive ping from the server"
    with _connect(port) as flood:  # ping strikes: too many pings -> GOAWAY too_many_pings
        for _ in range(4):
            flood.sendall(_frame(_PING, payload=bytes(8)))
        goaway = [f for f in _frames(flood, 5.0, _GOAWAY) if f[0] == _GOAWAY]
        assert goaway, "a ping flood was tolerated"
        code = int.from_bytes(goaway[0][2][4:8], "big")
        assert code == _ENHANCE_YOUR_CALM and b"too_many_pings" in goaway[0][2]


TRANSPORT = Limits(keepalive_s=0.2)


def test_encoder_keepalive_and_ping_strikes(models) -> None:
    enc = ServerThread(ENCODER, models, limits=TRANSPORT)
    try:
        _check_transport(enc.port)
    finally:
        enc.stop()


def test_trainer_is_built_like_the_others(tmp_path) -> None:
    """Before the one builder the trainer had no keepalive, message-size or reflection options."""
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    folders = dict(jobs_dir=tmp_path / "j", data_root=tmp_path / "data", models=tmp_path / "models")

    async def run() -> None:
        running = await start_trainer(TrainerConfig(**folders, limits=TRANSPORT, reflection=False))
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _check_transport, running.port)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
                refl = reflection_pb2_grpc.ServerReflectionStub(ch)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in refl.ServerReflectionInfo(iter([request])):
                        pass
                assert err.value.code() == CODE.UNIMPLEMENTED
        finally:
            await running.stop(0)

    asyncio.run(run())


# ---- /metrics
def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as reply:
        return reply.read().decode()


def test_metrics_loopback_by_default_https_or_off(models, tmp_path) -> None:
    """gRPC on every interface no longer puts /metrics there too (it has no token and no TLS):
    127.0.0.2 is loopback as well, so only a socket bound to 127.0.0.1 itself refuses it."""
    wide = ServerThread(ENCODER, models, host="0.0.0.0")
    try:
        port = wide.running.metrics_port
        assert "mcrave_build_info" in _get(f"http://127.0.0.1:{port}/metrics")
        with pytest.raises(OSError):
            _get(f"http://127.0.0.2:{port}/metrics")
    finally:
        wide.stop()
    pki = make_pki(tmp_path)
    tls = ServerThread(
        ENCODER,
        models,
        metrics_tls_cert=str(pki["server_cert"]),
        metrics_tls_key=str(pki["server_key"]),
    )
    try:
        port = tls.running.metrics_port
        trust = ssl.create_default_context(cafile=str(pki["ca_cert"]))
        assert "mcrave_build_info" in _get(f"https://127.0.0.1:{port}/metrics", trust)
        with pytest.raises(OSError):  # no plaintext beside it
            _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        tls.stop()
    off = ServerThread(ENCODER, models, metrics_port=None)
    try:
        assert off.running.metrics_port is None
        assert off.running.grpc.ready_info("encoder")["metrics_port"] is None
    finally:
        off.stop()
