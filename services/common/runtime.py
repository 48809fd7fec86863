"""What the encoder and decoder share at run time: loaded models, stream slots, batch groups, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import grpc

from services.common.batcher import BatchGroup, RunFn
from services.common.errors import ResourceExhausted, Unavailable
from services.common.limits import Limits
from services.common.metrics import ServiceMetrics
from services.common.registry_watch import LoadedVersion, RegistryWatcher

log = logging.getLogger(__name__)


class Stream:
    """An open stream's hold on a slot and its model's batch group; `close()` frees both."""

    def __init__(self, runtime: Runtime, model: LoadedVersion, peer: str) -> None:
        self.runtime = runtime
        self.model = model
        self.peer = peer
        self.group = runtime.group(model)
        self._closed = False
        self.group.join()
        runtime.metrics.active_streams.labels(model.name).inc()

    async def step(
        self, key: Hashable, run: RunFn, payload: Any, audio_s: float, *, last: bool = False
    ) -> Any:
        return await self.group.submit(key, run, payload, audio_s, last=last)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.group.leave()
        self.runtime.metrics.active_streams.labels(self.model.name).dec()
        self.runtime.release(self.peer)


def peer_address(context: grpc.aio.ServicerContext) -> str:
    """The client's address without its port ("ipv4:10.0.0.7"): what per-client limits count
    (one client opens many connections, each from another port)."""
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


class Runtime:
    def __init__(self, watcher: RegistryWatcher, limits: Limits, metrics: ServiceMetrics) -> None:
        self.watcher = watcher
        self.limits = limits
        self.metrics = metrics
        self.draining = False
        self._open = 0
        self._by_peer: dict[str, int] = {}
        self._groups: dict[LoadedVersion, BatchGroup] = {}

    @property
    def open_streams(self) -> int:
        return self._open

    def open(self, model: LoadedVersion, peer: str) -> Stream:
        """Take a stream slot bound to `model` for the client at address `peer` (refused when
        the server or that client is at its limit, or the server is draining)."""
        if self.draining:
            raise Unavailable("server is shutting down: retry on another instance", "draining")
        if self._open >= self.limits.max_streams:
            raise ResourceExhausted(
                f"stream limit reached ({self.limits.max_streams} open streams): retry later",
                "too-many-streams",
            )
        mine = self._by_peer.get(peer, 0)
        if mine >= self.limits.max_streams_per_peer:
            raise ResourceExhausted(
                f"per-client stream limit reached ({mine} open streams from {peer}, limit "
                f"{self.limits.max_streams_per_peer}): close one or retry later",
                "too-many-streams-per-peer",
            )
        self._prune()
        self._open += 1
        self._by_peer[peer] = mine + 1
        return Stream(self, model, peer)

    def release(self, peer: str) -> None:
        self._open -= 1
        self._by_peer[peer] -= 1
        if not self._by_peer[peer]:
            del self._by_peer[peer]

    def group(self, model: LoadedVersion) -> BatchGroup:
        if model not in self._groups:
            name = model.name

            def observe(size: int, waits: list[float], compute: float, audio_s: float) -> None:
                m = self.metrics
                m.batch_size.labels(name).observe(size)
                for w in waits:
                    m.queue_wait.labels(name).observe(w)
                m.compute.labels(name).inc(compute)
                if compute > 0:
                    m.speed.labels(name).set(audio_s / compute)

            self._groups[model] = BatchGroup(
                f"{name}-{model.version}",
                self.limits.max_batch,
                self.limits.max_wait_s,
                observe,
                alone=lambda: self._open == 1,
            )
        return self._groups[model]

    async def send(self, context: grpc.aio.ServicerContext, reply: Any) -> None:
        """Write one stream reply; a client that stops reading is cut off instead of piling up replies.

        Streams are processed one chunk at a time, so while a write waits for the client, nothing
        more is read from it: HTTP/2 flow control then holds the client back (the `credit` in
        StreamStarted tells well-behaved clients to stay far below that).
        """
        try:  # a timeout scope, not wait_for: that wraps the write in a task (2 loop passes more)
            async with asyncio.timeout(self.limits.reply_timeout_s):
                await context.write(reply)
        except TimeoutError:
            raise ResourceExhausted(
                f"client read no reply for {self.limits.reply_timeout_s:g} s: keep at most `credit` chunks "
                "unanswered and read replies as they come",
                "slow-consumer",
            ) from None

    # Counting a chunk runs on the next loop pass, i.e. once its reply is on its way: off the
    # chunk's critical path, where the first metrics update after ~40 ms asleep costs ~0.05 ms.

    def count_in(self, model: str, kind: str, nbytes: int, audio_s: float) -> None:
        asyncio.get_running_loop().call_soon(self._count_in, model, kind, nbytes, audio_s)

    def count_bytes_in(self, model: str, kind: str, nbytes: int) -> None:
        """Bytes of a second payload in the same chunk (its seconds already counted)."""
        asyncio.get_running_loop().call_soon(self._count_bytes_in, model, kind, nbytes)

    def count_out(self, model: str, kind: str, nbytes: int, audio_s: float, started: float) -> None:
        elapsed = time.perf_counter() - started
        asyncio.get_running_loop().call_soon(self._count_out, model, kind, nbytes, audio_s, elapsed)

    def _count_in(self, model: str, kind: str, nbytes: int, audio_s: float) -> None:
        m = self.metrics
        m.chunks_in.labels(model).inc()
        m.bytes_in.labels(model, kind).inc(nbytes)
        m.audio_in.labels(model).inc(audio_s)

    def _count_bytes_in(self, model: str, kind: str, nbytes: int) -> None:
        self.metrics.bytes_in.labels(model, kind).inc(nbytes)

    def _count_out(
        self, model: str, kind: str, nbytes: int, audio_s: float, elapsed: float
    ) -> None:
        m = self.metrics
        m.chunks_out.labels(model).inc()
        m.bytes_out.labels(model, kind).inc(nbytes)
        m.audio_out.labels(model).inc(audio_s)
        m.chunk_latency.labels(model).observe(elapsed)

    def _prune(self) -> None:
        """Stop the workers of versions that left the registry and have no stream left."""
        current = {lv for versions in self.watcher.models().values() for lv in versions.values()}
        for model in [m for m, g in self._groups.items() if m not in current and g.streams == 0]:
            self._groups.pop(model).close()

    async def watch(self, interval_s: float, after_poll: Callable[[], Awaitable[None]]) -> None:
        """Poll the registry forever (the blocking scan and model loads run in a thread)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            try:
                await loop.run_in_executor(None, self.watcher.poll)
            except Exception:  # noqa: BLE001 - a failed scan must not stop the watch
                log.exception("registry poll failed")
            await after_poll()

    def close(self) -> None:
        for group in self._groups.values():
            group.close()
        self._groups.clear()
