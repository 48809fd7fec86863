"""The decoder's meeting point for relayed streams (stream.proto's `Relay`).

A relay lets a chunk cross client -> encoder -> decoder -> client: the client's Decode stream
(the *reader*) opens with a token, binds its model and slot like any stream and then waits here;
the encoder's Relay call (the *feeder*) joins it by that token and sends the chunks, whose
replies go straight to the reader's client. The reader ends when the feeder has written the
final reply, or with the feeder's error; a feeder whose reader has gone is refused.

Tokens are the client's secret: one stream each, joined at most once, withdrawn when the reader
ends, so a guessed or replayed token finds nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)

TOKEN_CHARS = (16, 128)  # shortest and longest relay token
# HOST:PORT as relays name decoders: a DNS name or IPv4 address, or a bracketed IPv6 one. Nothing
# else, so an encoder's `--relay-to` pattern cannot be matched by a crafted string
ADDRESS = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


# hosts gRPC would read as a URI scheme ("unix:50052" is a socket file named 50052)
GRPC_SCHEMES = {"dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock"}


def is_address(text: str) -> bool:
    host = text.rpartition(":")[0].lower()
    return ADDRESS.fullmatch(text) is not None and host not in GRPC_SCHEMES


def check_token(token: str) -> str:
    lo, hi = TOKEN_CHARS
    if not lo <= len(token) <= hi:
        raise InvalidArgument(
            f"relay.token has {len(token)} characters: use {lo} to {hi} random ones", "bad-relay"
        )
    return token


@dataclass
class Waiting:
    """A reader waiting for (or being fed by) its feeder."""

    session: Any
    context: grpc.aio.ServicerContext  # the reader's: replies go there
    joined: asyncio.Future = field(default_factory=lambda: _future())
    done: asyncio.Future = field(default_factory=lambda: _future())

    @property
    def gone(self) -> bool:
        """The reader has ended (its client went away or it timed out)."""
        return self.done.done()

    def check_alive(self) -> None:
        if self.gone:
            raise FailedPrecondition(
                "the relayed Decode stream has ended (its client went away)", "relay-gone"
            )

    def finish(self, error: BaseException | None) -> None:
        """End the reader: cleanly, or with the feeder's error (a status its client can read)."""
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        elif isinstance(error, ServiceError):
            self.done.set_exception(error)
        else:  # the encoder went away or failed: the reader gets a retryable status
            self.done.set_exception(
                Unavailable("the encoder relaying this stream stopped feeding it", "relay-lost")
            )


class RelayPoints:
    """The readers of one decoder server, by token."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiting] = {}

    def offer(self, token: str, session: Any, context: grpc.aio.ServicerContext) -> Waiting:
        if check_token(token) in self._waiting:
            raise FailedPrecondition(
                "relay.token is already waiting on another stream: use a fresh random token",
                "relay-token-taken",
            )
        waiting = self._waiting[token] = Waiting(session, context)
        return waiting

    def join(self, token: str) -> Waiting:
        waiting = self._waiting.get(check_token(token))
        if waiting is None or waiting.joined.done() or waiting.gone:
            raise NotFound(
                "no Decode stream waits for this relay token here: open it first, on this "
                "decoder, with the same relay.token",
                "relay-not-found",
            )
        waiting.joined.set_result(None)
        return waiting

    def withdraw(self, token: str, waiting: Waiting) -> None:
        if self._waiting.get(token) is waiting:
            del self._waiting[token]

    async def hold(
        self,
        token: str,
        session: Any,
        context: grpc.aio.ServicerContext,
        incoming: AsyncIterator[Any],
        join_timeout_s: float,
    ) -> None:
        """Run a reader: wait for its feeder to join within `join_timeout_s` and to end. The
        reader's client sends nothing more (a message is FAILED_PRECONDITION; half-closing is
        fine); cancelling it ends the wait and tells the feeder."""
        waiting = self.offer(token, session, context)
        listen = asyncio.ensure_future(anext(incoming, None))
        try:
            try:
                async with asyncio.timeout(join_timeout_s):
                    await _unless_sent(waiting.joined, listen)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"no encoder joined this relay within {join_timeout_s:g} s (server option "
                    "--first-chunk-timeout): open the Encode stream with the same relay.token",
                    "relay-timeout",
                ) from None
            await _unless_sent(waiting.done, listen)  # the feeder's outcome
        finally:
            listen.cancel()
            self.withdraw(token, waiting)
            waiting.finish(None)  # a feeder still running sees the reader gone


def _future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


async def _unless_sent(target: asyncio.Future, listen: asyncio.Future) -> None:
    """Wait for `target`; a message from the reader's client meanwhile is refused."""
    while not target.done():
        await asyncio.wait(
            {target} if listen.done() else {target, listen}, return_when=asyncio.FIRST_COMPLETED
        )
        if listen.done() and not target.done() and listen.result() is not None:
            raise FailedPrecondition(
                "a relayed Decode stream takes no message after its config: the encoder feeds it",
                "relay-reader-sends",
            )
    target.result()
