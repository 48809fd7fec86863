"""The encoder's half of a relay (stream.proto's `Relay`): a stream's latents, with the present
audio that made them, go straight to the decoder holding the client's Decode stream, so the
client is not a hop in the middle. The decoder's half is services/common/relay.py.

Only decoders the operator listed (`--relay-to`) are dialled, never an address a client names,
so a relay cannot be used to reach anything else. A listed pattern (`*.mcrave-decoder.NS.svc.
cluster.local:50052`) admits the per-pod addresses of decoders behind a load balancer, which
each advertise their own (`mcrave serve decoder --advertise`) to the clients of relayed streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence

import grpc
import grpc.aio
from mcrave_client.connection import Connection
from mcrave_client.proto import (
    decoder_pb2,
    decoder_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    stream_pb2,
)

from services.common.errors import REASON_KEY, FailedPrecondition, PermissionDenied, from_status
from services.common.relay import check_token, is_address

WILDCARDS = "*?"
_closing: set[asyncio.Task] = set()  # channel closes in flight (a task needs a reference)


def is_pattern(target: str) -> bool:
    return any(c in target for c in WILDCARDS)


def pattern_regex(pattern: str) -> re.Pattern:
    """An operator's `--relay-to` pattern as a regex over HOST:PORT: `*` and `?` stand for
    characters of one DNS label (letters, digits, '-'), never a dot or a colon, so
    `*.mcrave-decoder.NS.svc.cluster.local:50052` admits pod names of that domain and nothing
    else, and `local*:*` does not admit `localhost.evil.example:1`. Everything else is literal;
    case-insensitive, like DNS."""
    parts = []
    for ch in pattern:
        parts.append({"*": "[A-Za-z0-9-]*", "?": "[A-Za-z0-9-]"}.get(ch) or re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE)


def _close_later(channel: grpc.aio.Channel) -> None:
    """Close a stream's own channel from synchronous cleanup (on the event loop's thread)."""
    try:
        task = asyncio.get_running_loop().create_task(channel.close())
    except RuntimeError:  # no loop running: the channel goes with its last reference
        return
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class Forward:
    """One relayed stream's Relay call. Writes are awaited in order by the stream's own task; a
    present-set change goes out before the next chunk (where it takes effect)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        decoder: Connection,
        relay: stream_pb2.Relay,
        present: Sequence[int],
        owns_channel: bool,
    ) -> None:
        self._decoder = decoder
        self._channel = channel
        self._owned = owns_channel  # the stream's own channel (a decoder admitted by pattern)
        stub = decoder_pb2_grpc.DecoderServiceStub(channel)
        self._call = stub.Relay(metadata=decoder.metadata())
        self.with_audio = not relay.latent_only
        self._join: stream_pb2.StreamConfig | None = stream_pb2.StreamConfig(
            relay=stream_pb2.Relay(token=relay.token)
        )
        self._present: tuple[int, ...] | None = tuple(present)

    def set_present(self, present: Sequence[int]) -> None:
        self._present = tuple(present)

    async def chunk(self, chunk: stream_pb2.LatentChunk) -> None:
        """Forward one chunk, after the joining config or a present-set change if due."""
        config, self._join = self._join, None
        if self._present is not None and self.with_audio:
            config = config or stream_pb2.StreamConfig()
            config.present.extend(self._present)
        self._present = None
        if config is not None:
            await self._write(decoder_pb2.DecodeRequest(config=config))
        await self._write(decoder_pb2.DecodeRequest(chunk=chunk))

    async def finish(self) -> None:
        """Half-close and wait until the decoder has written the stream's final reply."""
        try:
            await self._call.done_writing()
            await self._call
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None

    def cancel(self) -> None:
        """End the call (a no-op once it has finished) and release the stream's own channel."""
        self._call.cancel()
        if self._owned:
            _close_later(self._channel)
            self._owned = False

    async def _write(self, request: decoder_pb2.DecodeRequest) -> None:
        try:
            await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the call has ended: say how
            call = self._call
            error = grpc.aio.AioRpcError(
                await call.code(),
                await call.initial_metadata(),
                await call.trailing_metadata(),
                await call.details(),
            )
            raise self._error(await self._why(error)) from None

    async def _why(self, error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """A write that races the decoder's refusal of the call (a bad token, say) fails as
        INTERNAL, its real status lost (grpc-python puts its own in place when the write's batch
        fails); then a unary call with the same credentials asks the decoder why."""
        if error.code() != grpc.StatusCode.INTERNAL:
            return error
        probe = models_pb2_grpc.ModelServiceStub(self._channel).ListModels
        try:
            await probe(
                models_pb2.ListModelsRequest(), metadata=self._decoder.metadata(), timeout=5
            )
        except grpc.aio.AioRpcError as refusal:
            return refusal
        return error

    def _error(self, error: grpc.aio.AioRpcError) -> Exception:
        reason = dict(error.trailing_metadata() or ()).get(REASON_KEY, "relay-failed")
        return from_status(
            error.code(), f"relay to decoder {self._decoder.target}: {error.details()}", reason
        )


class RelayLinks:
    """The decoders this encoder may relay to: listed ones get one channel each, dialled on
    first use; one admitted by a pattern gets a channel per stream, closed with it (pods come
    and go: a cache would grow without bound; gRPC shares the connection underneath)."""

    def __init__(self, decoders: Sequence[Connection]) -> None:
        self._patterns = [(pattern_regex(c.target), c) for c in decoders if is_pattern(c.target)]
        self._decoders = {c.target: c for c in decoders if not is_pattern(c.target)}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _by_pattern(self, address: str) -> Connection | None:
        """A connection to `address` if it matches a listed pattern (with that pattern's TLS,
        token and server name)."""
        if not is_address(address):
            return None
        for regex, pattern in self._patterns:
            if regex.fullmatch(address):
                return dataclasses.replace(pattern, target=address)
        return None

    def open(self, relay: stream_pb2.Relay, present: Sequence[int]) -> Forward:
        """The Relay call for a stream whose first config carries `relay` (and `present`)."""
        check_token(relay.token)
        if not self._decoders and not self._patterns:
            raise FailedPrecondition(
                "this encoder relays to no decoder (start it with --relay-to HOST:PORT): open "
                "the stream without relay",
                "relay-off",
            )
        decoder = self._decoders.get(relay.decoder)
        if decoder is not None:
            if decoder.target not in self._channels:
                self._channels[decoder.target] = decoder.aio_channel()
            return Forward(self._channels[decoder.target], decoder, relay, present, False)
        decoder = self._by_pattern(relay.decoder)
        if decoder is None:
            listed = [*sorted(self._decoders), *(c.target for _, c in self._patterns)]
            raise PermissionDenied(
                f"relay.decoder {relay.decoder!r} is not a decoder this encoder relays to: "
                f"{', '.join(listed)}",
                "relay-target",
            )
        return Forward(decoder.aio_channel(), decoder, relay, present, True)

    async def close(self) -> None:
        """Close the channels to the decoders, once the server has stopped (no stream left)."""
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(channel.close() for channel in channels.values()))
