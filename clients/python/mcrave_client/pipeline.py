"""Encoder -> decoder in one go: latents flow into the decoder as the encoder produces them,
each with the present channels' audio that produced it (the decoder's spatial stage builds the
missing channels from that audio), or alone with `latent_only=True`.

The decoder stream opens first; the encoder stream is opened on the exact version the decoder
bound, and the pair is refused if their fingerprints differ, so a registry update between the two
opens can never mix versions.

With `relay=True` the encoder forwards the latents to the decoder itself (stream.proto's `Relay`):
a chunk crosses three hops instead of four and the client is not one in the middle, which saves
a network round trip per chunk when the services are remote. The encoder must list the decoder
(`mcrave serve encoder --relay-to HOST:PORT`, or a pattern); behind a load balancer the decoder
that took the stream tells its own address (`--advertise`), and the encoder is sent there.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.errors import ClientError
from mcrave_client.proto import stream_pb2
from mcrave_client.types import Decoded, ModelInfo, StreamInfo


def choose_model(models: list[ModelInfo], target: str) -> ModelInfo:
    """The only model a server offers; with several the caller must name one."""
    if len(models) == 1:
        return models[0]
    if not models:
        raise ClientError(f"{target} serves no models")
    names = ", ".join(sorted(m.ref.name for m in models))
    raise ClientError(f"{target} serves several models ({names}); choose one with --model")


def check_same_model(encoder: StreamInfo, decoder: StreamInfo) -> None:
    if encoder.model != decoder.model:
        raise ClientError(
            f"encoder and decoder loaded different weights for {encoder.model.name}: "
            f"v{encoder.model.version} {encoder.model.fingerprint[:12]} vs "
            f"v{decoder.model.version} {decoder.model.fingerprint[:12]}"
        )


def join(encoder: Any, decoder: Any, relayed: type[PipelineStream] | None = None) -> PipelineStream:
    """Pair two open streams, cancelling both if they bound different weights; `relayed`: the
    pipeline class of a relayed pair (whose encoder counts its credit by the decoder's replies)."""
    try:
        check_same_model(encoder.info, decoder.info)
    except BaseException:
        encoder.cancel()
        decoder.cancel()
        raise
    if relayed is None:
        return PipelineStream(encoder, decoder)
    encoder.count_credit_by(decoder)
    return relayed(encoder, decoder)


def relay_request(relay: bool | str, latent_only: bool) -> stream_pb2.Relay | None:
    """A fresh relay for a stream (None when not relayed): an unguessable token, and the
    decoder's address as the encoder knows it when `relay` names it (a string, e.g. a
    cluster-internal name); else it is filled in once the decoder stream has started
    (`StreamPlan.encoder_args`)."""
    if not relay:
        return None
    return stream_pb2.Relay(
        token=secrets.token_urlsafe(24),
        decoder=relay if isinstance(relay, str) else "",
        latent_only=latent_only,
    )


@dataclass(frozen=True)
class StreamPlan:
    """How `Pipeline.stream` (sync or asyncio) opens its two streams: the decoder's first (a
    relayed stream's reader must be waiting, and it tells which decoder process holds it), then
    the encoder's, bound to the version the decoder bound."""

    present: tuple[int, ...]
    keep_audio: bool  # the encoder's replies carry their audio, for the decoder
    decoder_present: tuple[int, ...]  # () = latent-only
    relay: stream_pb2.Relay | None
    dialled: str  # the decoder's address as this client dials it

    @classmethod
    def of(
        cls, pipeline: Any, present: Iterable[int], latent_only: bool, relay: bool | str | None
    ) -> StreamPlan:
        """`relay` None: the pipeline's choice."""
        present = tuple(present)
        chosen = pipeline.relay if relay is None else relay
        request = relay_request(chosen, latent_only)
        return cls(
            present,
            keep_audio=not latent_only and request is None,
            decoder_present=() if latent_only else present,
            relay=request,
            dialled=pipeline.decoder.connection.target,
        )

    def decoder_args(self, model: Any, chunk_frames: int, version: int, seed: int) -> tuple:
        """The decoder client's `stream` arguments."""
        token = self.relay.token if self.relay else ""
        return model, chunk_frames, version, seed, self.decoder_present, token

    def encoder_args(self, reader: Any, chunk_frames: int) -> tuple:
        """The encoder client's `stream` arguments, once the decoder stream has started with
        `reader` (its StreamInfo): the same version, and for a relay the decoder process that
        holds the stream (its advertised address behind a load balancer, else as dialled)."""
        relay = self.relay
        if relay is not None and not relay.decoder:
            relay = stream_pb2.Relay(
                token=relay.token,
                decoder=reader.relay_address or self.dialled,
                latent_only=relay.latent_only,
            )
        bound = reader.model
        return bound.name, self.present, chunk_frames, bound.version, self.keep_audio, relay


class PipelineStream:
    """An encoder stream feeding a decoder stream; `run` yields decoded audio as it arrives.

    Works for both kinds of stream: with asyncio streams `run` is an async generator and the
    object is an async context manager.
    """

    def __init__(self, encoder: Any, decoder: Any) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.info = encoder.info

    def run(self, items: Any) -> Any:
        """Stream `(present, frames)` chunks (or SetPresent) and yield `Decoded` blocks."""
        return self.decoder.run(self.encoder.run(items))

    def set_present(self, present: Iterable[int]) -> None:
        self.encoder.set_present(present)

    def cancel(self) -> None:
        self.encoder.cancel()
        self.decoder.cancel()

    def __enter__(self) -> PipelineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    async def __aenter__(self) -> PipelineStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class RelayedStream(PipelineStream):
    """A relayed pipeline (sync): the chunks go to the encoder from a helper thread, the decoded
    audio comes from the decoder stream, which the encoder feeds."""

    def run(self, items: Iterable[Any]) -> Iterator[Decoded]:
        failed: list[BaseException] = []

        def drive() -> None:
            try:
                for _ in self.encoder.run(items):  # relayed: only the empty final reply
                    pass
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reading thread
                failed.append(exc)
                self.decoder.cancel()  # its reader would otherwise wait for a feeder

        driver = threading.Thread(target=drive, name="mcrave-relay-encoder", daemon=True)
        driver.start()
        try:
            yield from self.decoder.results()
        except BaseException:
            self.encoder.cancel()
            driver.join()
            if failed:
                raise failed[0] from None
            raise
        driver.join()
        if failed:
            raise failed[0]


class Pipeline:
    """An encoder service and a decoder service used together.

    `relay`: streams go relayed (the encoder forwards to the decoder; see the module docstring):
    True for the decoder process that takes the stream (the address it advertises, else the one
    this client dials), or the address as the encoder's `--relay-to` names it when that differs
    (e.g. a cluster-internal name)."""

    def __init__(
        self, encoder: EncoderClient, decoder: DecoderClient, *, relay: bool | str = False
    ) -> None:
        self.encoder, self.decoder, self.relay = encoder, decoder, relay

    def model(self, name: str | None = None, version: int = 0) -> ModelInfo:
        """GetModel for `name` (or the encoder's only model)."""
        if name is None:
            return choose_model(self.encoder.list_models(), self.encoder.connection.target)
        return self.encoder.get_model(name, version)

    def stream(
        self,
        model: str | ModelInfo,
        present: Iterable[int],
        chunk_frames: int,
        version: int = 0,
        seed: int = 0,
        latent_only: bool = False,
        relay: bool | str | None = None,
    ) -> PipelineStream:
        """`latent_only`: the decoder gets the latents alone (no present audio on the wire).
        `relay`: this stream's instead of the pipeline's (see `Pipeline`)."""
        plan = StreamPlan.of(self, present, latent_only, relay)
        decoder = self.decoder.stream(*plan.decoder_args(model, chunk_frames, version, seed))
        try:
            encoder = self.encoder.stream(*plan.encoder_args(decoder.info, chunk_frames))
        except BaseException:
            decoder.cancel()
            raise
        return join(encoder, decoder, RelayedStream if plan.relay else None)

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
