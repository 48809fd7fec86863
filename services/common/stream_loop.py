"""The frame every Encode/Decode stream shares: config first, then numbered chunks, then the end.

Services supply a `StreamHandler` for what differs (what a chunk becomes); this loop owns the
order rules, sequence numbers, reply writes, the idle limits (a stream that sends no chunk holds
its slot for nothing) and freeing the stream's slot in `finally`, so a cancelled, timed-out,
idle or failed stream never leaves state behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from mcrave_client.proto import stream_pb2

from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from services.common.limits import Limits
from services.common.protocol import SeqCounter
from services.common.runtime import Runtime, Stream, peer_address


class Session(Protocol):
    stream: Stream


class StreamHandler(Protocol):
    def open(self, config: stream_pb2.StreamConfig, peer: str) -> Session:
        """Bind a first config to a model and take a stream slot for the client at `peer`."""

    def started(self, session: Session) -> Any:
        """The reply answering the first config."""

    def update(self, session: Session, config: stream_pb2.StreamConfig) -> None:
        """Apply a mid-stream config (or refuse it)."""

    async def chunk(self, session: Session, chunk: Any) -> Any:
        """The reply to one in-order chunk."""

    async def finish(self, session: Session, seq: int) -> Any:
        """The `final` reply (numbered `seq`) once the client has half-closed."""


class _Idle:
    """When the next chunk is due: `first_chunk_timeout_s` after the stream opened, then
    `idle_timeout_s` after each reply (config messages do not count)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.first = True
        self.deadline = asyncio.get_running_loop().time() + limits.first_chunk_timeout_s

    def chunk_answered(self) -> None:
        self.first = False
        self.deadline = asyncio.get_running_loop().time() + self.limits.idle_timeout_s

    async def next(self, requests: AsyncIterator[Any]) -> Any:
        """The next request, None at the end of the stream; DEADLINE_EXCEEDED once overdue."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await anext(requests, None)
        except TimeoutError:
            if self.first:
                what = f"within {self.limits.first_chunk_timeout_s:g} s of opening the stream"
                option = "first-chunk-timeout"
            else:
                what = f"for {self.limits.idle_timeout_s:g} s after the last one"
                option = "idle-timeout"
            raise DeadlineExceeded(
                f"no chunk {what} (idle limit, server option --{option}): the stream's slot is "
                "freed; send chunks as the audio comes, or open a new stream when it resumes",
                "idle-timeout",
            ) from None


async def run_stream(
    rt: Runtime,
    requests: AsyncIterator[Any],
    context: grpc.aio.ServicerContext,
    handler: StreamHandler,
) -> None:
    session: Session | None = None
    seq = SeqCounter()
    idle, incoming = _Idle(rt.limits), aiter(requests)
    try:
        while (request := await idle.next(incoming)) is not None:
            kind = request.WhichOneof("msg")
            if kind is None:
                raise InvalidArgument(
                    f"empty {type(request).__name__}: set config or chunk", "bad-message"
                )
            if session is None:
                if kind != "config":
                    raise FailedPrecondition(
                        f"{kind} before the stream config: send a StreamConfig first", "no-config"
                    )
                session = handler.open(request.config, peer_address(context))
                await rt.send(context, handler.started(session))
            elif kind == "config":
                handler.update(session, request.config)
            else:
                seq.check(request.chunk.seq)
                await rt.send(context, await handler.chunk(session, request.chunk))
                idle.chunk_answered()
        if session is None:
            raise InvalidArgument("stream ended without a StreamConfig", "no-config")
        await rt.send(context, await handler.finish(session, seq.next))
    finally:
        if session is not None:
            session.stream.close()
