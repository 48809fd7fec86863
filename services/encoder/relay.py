"""The encoder's half of a relay (stream.proto's `Relay`): a stream's latents, with the present
audio that made them, go straight to the decoder holding the client's Decode stream, so the
client is not a hop in the middle. The decoder's half is services/common/relay.py.

Only decoders the operator listed (`--relay-to`) are dialled, never an address a client names,
so a relay cannot be used to reach anything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import grpc.aio
from mcrave_client.connection import Connection
from mcrave_client.proto import decoder_pb2, decoder_pb2_grpc, stream_pb2

from services.common.errors import REASON_KEY, FailedPrecondition, PermissionDenied, from_status
from services.common.relay import check_token


class Forward:
    """One relayed stream's Relay call. Writes are awaited in order by the stream's own task; a
    present-set change goes out before the next chunk (where it takes effect)."""

    def __init__(
        self,
        call: grpc.aio.StreamUnaryCall,
        target: str,
        relay: stream_pb2.Relay,
        present: Sequence[int],
    ) -> None:
        self._call = call
        self._target = target
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
        self._call.cancel()

    async def _write(self, request: decoder_pb2.DecodeRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None
        except asyncio.InvalidStateError:  # the call had already ended: say how
            call = self._call
            raise self._error(
                grpc.aio.AioRpcError(
                    await call.code(),
                    await call.initial_metadata(),
                    await call.trailing_metadata(),
                    await call.details(),
                )
            ) from None

    def _error(self, error: grpc.aio.AioRpcError) -> Exception:
        reason = dict(error.trailing_metadata() or ()).get(REASON_KEY, "relay-failed")
        return from_status(
            error.code(), f"relay to decoder {self._target}: {error.details()}", reason
        )


class RelayLinks:
    """The decoders this encoder may relay to, one channel each, dialled on first use."""

    def __init__(self, decoders: Sequence[Connection]) -> None:
        self._decoders = {c.target: c for c in decoders}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def open(self, relay: stream_pb2.Relay, present: Sequence[int]) -> Forward:
        """The Relay call for a stream whose first config carries `relay` (and `present`)."""
        check_token(relay.token)
        if not self._decoders:
            raise FailedPrecondition(
                "this encoder relays to no decoder (start it with --relay-to HOST:PORT): open "
                "the stream without relay",
                "relay-off",
            )
        decoder = self._decoders.get(relay.decoder)
        if decoder is None:
            raise PermissionDenied(
                f"relay.decoder {relay.decoder!r} is not a decoder this encoder relays to: "
                f"{', '.join(sorted(self._decoders))}",
                "relay-target",
            )
        if decoder.target not in self._channels:
            self._channels[decoder.target] = decoder.aio_channel()
        stub = decoder_pb2_grpc.DecoderServiceStub(self._channels[decoder.target])
        return Forward(stub.Relay(metadata=decoder.metadata()), decoder.target, relay, present)

    async def close(self) -> None:
        """Close the channels to the decoders, once the server has stopped (no stream left)."""
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(channel.close() for channel in channels.values()))
