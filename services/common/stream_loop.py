"""The frame every Encode/Decode stream shares: config first, then numbered chunks, then the end.

Services supply a `StreamHandler` for what differs (what a chunk becomes); this loop owns the
order rules, sequence numbers, reply writes and freeing the stream's slot in `finally`, so a
cancelled, timed-out or failed stream never leaves state behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from mcrave_client.proto import stream_pb2

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.protocol import SeqCounter
from services.common.runtime import Runtime, Stream


class Session(Protocol):
    stream: Stream


class StreamHandler(Protocol):
    def open(self, config: stream_pb2.StreamConfig) -> Session:
        """Bind a first config to a model and take a stream slot."""

    def started(self, session: Session) -> Any:
        """The reply answering the first config."""

    def update(self, session: Session, config: stream_pb2.StreamConfig) -> None:
        """Apply a mid-stream config (or refuse it)."""

    async def chunk(self, session: Session, chunk: Any) -> Any:
        """The reply to one in-order chunk."""

    async def finish(self, session: Session, seq: int) -> Any:
        """The `final` reply (numbered `seq`) once the client has half-closed."""


async def run_stream(
    rt: Runtime,
    requests: AsyncIterator[Any],
    context: grpc.aio.ServicerContext,
    handler: StreamHandler,
) -> None:
    session: Session | None = None
    seq = SeqCounter()
    try:
        async for request in requests:
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
                session = handler.open(request.config)
                await rt.send(context, handler.started(session))
            elif kind == "config":
                handler.update(session, request.config)
            else:
                seq.check(request.chunk.seq)
                await rt.send(context, await handler.chunk(session, request.chunk))
        if session is None:
            raise InvalidArgument("stream ended without a StreamConfig", "no-config")
        await rt.send(context, await handler.finish(session, seq.next))
    finally:
        if session is not None:
            session.stream.close()
