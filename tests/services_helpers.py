"""Helpers for the services tests: tiny registries, servers on port 0 in a background loop, streams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from mcrave_client.proto import (
    decoder_pb2,
    decoder_pb2_grpc,
    encoder_pb2,
    encoder_pb2_grpc,
    stream_pb2,
)

from services.common.limits import Limits
from services.common.server import RunningServer, ServerConfig, ServiceDef, start_server

SR = 44100


def publish_tiny(root: Path, name: str = "tiny", seed: int = 0, channels: int = 2) -> int:
    """Publish an untrained `test`-preset model (weights from `seed`) as the next version."""
    import torch  # here, not at the top: the split test's client process must not pay for torch

    from mcrave.checkpoint import save_checkpoint
    from mcrave.config import preset
    from mcrave.model import MCRave
    from mcrave.registry import publish_version

    torch.manual_seed(seed)
    model = MCRave(preset("test", channels=channels).model)
    ckpt = root.parent / f".{name}-{seed}-{channels}.ckpt"
    save_checkpoint(ckpt, model, force=True)
    version = publish_version(root, name, ckpt)
    ckpt.unlink()
    return version


class ServerThread:
    """A real grpc.aio server (encoder or decoder) running in its own event-loop thread."""

    def __init__(self, service: ServiceDef, models: Path, **options: Any) -> None:
        options.setdefault("limits", Limits())
        options.setdefault("poll_interval_s", 0.2)
        self.cfg = ServerConfig(models=models, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.running: RunningServer = self.call(start_server(self.cfg, service))
        except BaseException:
            self._end_loop()
            raise
        self.port = self.running.port
        self.target = f"127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a metric sample (0 when never set)."""
        value = self.running.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def poll(self) -> None:
        self.running.runtime.watcher.poll()

    def stop(self, grace: float = 0.5) -> None:
        try:
            self.call(self.running.stop(grace))
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def channel(target: str) -> grpc.Channel:
    size = Limits().max_message_bytes
    return grpc.insecure_channel(
        target,
        options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
    )


def config(
    model: str = "tiny",
    version: int = 0,
    present: tuple[int, ...] = (0, 1),
    chunk: int = 1024,
    channels: int = 2,
    seed: int = 0,
) -> stream_pb2.StreamConfig:
    return stream_pb2.StreamConfig(
        model=model,
        version=version,
        sample_rate=SR,
        channels=channels,
        present=list(present),
        chunk_frames=chunk,
        seed=seed,
    )


def audio(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic test audio [frames, channels] float32."""
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((frames, channels))).astype(np.float32)


def encode_requests(
    cfg: stream_pb2.StreamConfig, x: np.ndarray, chunk: int
) -> Iterator[encoder_pb2.EncodeRequest]:
    """Config then chunks of the present channels of x [frames, N]."""
    yield encoder_pb2.EncodeRequest(config=cfg)
    present = list(cfg.present)
    for seq, start in enumerate(range(0, len(x), chunk)):
        part = np.ascontiguousarray(x[start : start + chunk, present], dtype="<f4")
        yield encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=part.tobytes()))


def encode(
    target: str, cfg: stream_pb2.StreamConfig, x: np.ndarray, chunk: int | None = None
) -> tuple[stream_pb2.StreamStarted, list[stream_pb2.LatentChunk]]:
    with channel(target) as ch:
        replies = list(
            encoder_pb2_grpc.EncoderServiceStub(ch).Encode(
                encode_requests(cfg, x, chunk or cfg.chunk_frames)
            )
        )
    return replies[0].started, [r.latents for r in replies[1:]]


def latents_array(chunks: list[stream_pb2.LatentChunk], latent_size: int) -> np.ndarray:
    return np.concatenate([np.frombuffer(c.data, "<f4").reshape(-1, latent_size) for c in chunks])


def with_audio(
    latents: list[stream_pb2.LatentChunk], x: np.ndarray, present: tuple[int, ...], chunk: int
) -> list[stream_pb2.LatentChunk]:
    """Copies of the encoder's latent chunks carrying the present channels' audio they stand for:
    chunk i gets x[i*chunk:(i+1)*chunk, present] zero-padded to frames x ratio; the final (tail
    flush) goes without, which the decoder takes as silence."""
    out = []
    for i, c in enumerate(latents):
        copy = stream_pb2.LatentChunk()
        copy.CopyFrom(c)
        if not c.final:
            frames = len(c.data) // (4 * 8) * 256  # the tiny model: latent_size 8, ratio 256
            part = np.zeros((frames, len(present)), "<f4")
            block = x[i * chunk : (i + 1) * chunk, list(present)]
            part[: len(block)] = block
            copy.audio = part.tobytes()
        out.append(copy)
    return out


def decode(
    target: str, cfg: stream_pb2.StreamConfig, latents: list[stream_pb2.LatentChunk]
) -> tuple[stream_pb2.StreamStarted, np.ndarray]:
    """Feed the encoder's latent chunks (with `audio` when cfg.present is set, see `with_audio`)
    to a decoder; returns all channels [frames, N]."""

    def requests() -> Iterator[decoder_pb2.DecodeRequest]:
        yield decoder_pb2.DecodeRequest(config=cfg)
        for c in latents:
            yield decoder_pb2.DecodeRequest(chunk=c)

    with channel(target) as ch:
        replies = list(decoder_pb2_grpc.DecoderServiceStub(ch).Decode(requests()))
    pcm = b"".join(r.audio.pcm for r in replies[1:])
    assert replies[-1].audio.final
    return replies[0].started, np.frombuffer(pcm, "<f4").reshape(-1, cfg.channels)


class OpenStream:
    """A bidi stream driven step by step: `send(request)`, `recv()`, `close()` (half-close)."""

    _END = object()

    def __init__(self, method: Any, timeout: float | None = None) -> None:
        import queue

        self._queue: queue.Queue = queue.Queue()
        self._replies = method(iter(self._queue.get, self._END), timeout=timeout)

    def send(self, request: Any) -> None:
        self._queue.put(request)

    def recv(self) -> Any:
        return next(self._replies)

    def close(self) -> list[Any]:
        """Half-close and collect the remaining replies."""
        self._queue.put(self._END)
        return list(self._replies)

    def cancel(self) -> None:
        """Cancel the call and release the thread feeding its requests."""
        self._replies.cancel()
        self._queue.put(self._END)


class CliServer:
    """`mcrave serve SERVICE` as a real subprocess on port 0; `wait_ready()` returns its ready file."""

    def __init__(
        self,
        service: str,
        models: Path,
        ready: Path,
        *,
        prefix: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        extra: tuple[str, ...] = (),
    ) -> None:
        import os
        import subprocess
        import sys

        self.ready = ready
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "mcrave.cli.main",
                "serve",
                service,
                "--models",
                str(models),
                "--host",
                host,
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--threads",
                "1",
                "--ready-file",
                str(ready),
                *extra,
            ],
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 60) -> dict:
        import json
        import time

        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.proc.poll() is None, self.proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"{self.proc.args} never became ready"
            time.sleep(0.05)
        return json.loads(self.ready.read_text())

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (drain), killing it only if it overstays; returns the exit code."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
