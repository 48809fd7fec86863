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
from services.common.relay import RelayPoints
from services.common.runtime import Runtime, peer_address


class Session(Protocol):
    def close(self) -> None:
        """Free the stream's slot and anything else it holds."""


class StreamHandler(Protocol):
    def open(self, config: stream_pb2.StreamConfig, peer: str) -> Session:
        """Bind a first config to a model and take a stream slot for the client at `peer`."""

    def started(self, session: Session) -> Any:
        """The reply answering the first config."""

    def update(self, session: Session, config: stream_pb2.StreamConfig) -> None:
        """Apply a mid-stream config (or refuse it)."""

    async def chunk(self, session: Session, chunk: Any) -> Any | None:
        """The reply to one in-order chunk (None: no reply)."""

    async def finish(self, session: Session, seq: int) -> Any:
        """The `final` reply (numbered `seq`) once the client has half-closed."""


class Idle:
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
    relays: RelayPoints | None = None,
) -> None:
    """A stream from its first config to its end. With `relays` (the decoder), a first config
    carrying `relay.token` makes a relay reader: the chunks come from an encoder instead."""
    session: Session | None = None
    idle, incoming = Idle(rt.limits), aiter(requests)
    try:
        config = await first_config(idle, incoming)
        session = handler.open(config, peer_address(context))
        await rt.send(context, handler.started(session))
        token = config.relay.token
        if token and relays is not None:
            await relays.hold(token, session, context, incoming, rt.limits.first_chunk_timeout_s)
        else:
            await serve_chunks(rt, incoming, idle, handler, session, context)
    finally:
        if session is not None:
            session.close()


async def first_config(idle: Idle, incoming: AsyncIterator[Any]) -> Any:
    """The StreamConfig every stream (and relay) starts with; a clear status otherwise."""
    request = await idle.next(incoming)
    kind = _kind(request) if request is not None else None
    if kind != "config":
        if kind is None:
            raise InvalidArgument("stream ended without a StreamConfig", "no-config")
        raise FailedPrecondition(
            f"{kind} before the stream config: send a StreamConfig first", "no-config"
        )
    return request.config


async def serve_chunks(
    rt: Runtime,
    incoming: AsyncIterator[Any],
    idle: Idle,
    handler: StreamHandler,
    session: Session,
    replies: grpc.aio.ServicerContext,
) -> None:
    """Config updates and numbered chunks until the client half-closes, then the `final` reply;
    replies are written to `replies` (a relay's go to the reader's stream). A chunk whose
    handler returns None is answered by nothing (a relayed encoder stream)."""
    seq = SeqCounter()
    while (request := await idle.next(incoming)) is not None:
        if _kind(request) == "config":
            handler.update(session, request.config)
            continue
        seq.check(request.chunk.seq)
        reply = await handler.chunk(session, request.chunk)
        if reply is not None:
            await rt.send(replies, reply)
        idle.chunk_answered()
    await rt.send(replies, await handler.finish(session, seq.next))


def _kind(request: Any) -> str:
    kind = request.WhichOneof("msg")
    if kind is None:
        raise InvalidArgument(f"empty {type(request).__name__}: set config or chunk", "bad-message")
    return kind
