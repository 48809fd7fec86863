"""Encoder -> decoder in one go: latents flow into the decoder as the encoder produces them,
each with the present channels' audio that produced it (the decoder's spatial stage builds the
missing channels from that audio), or alone with `latent_only=True`.

The decoder stream is opened on the exact version (and fingerprint) the encoder stream bound, so a
registry update between the two opens can never mix versions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.errors import ClientError
from mcrave_client.types import ModelInfo, StreamInfo


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


def join(encoder: Any, decoder: Any) -> PipelineStream:
    """Pair two open streams, cancelling both if they bound different weights."""
    try:
        check_same_model(encoder.info, decoder.info)
    except BaseException:
        encoder.cancel()
        decoder.cancel()
        raise
    return PipelineStream(encoder, decoder)


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


class Pipeline:
    """An encoder service and a decoder service used together."""

    def __init__(self, encoder: EncoderClient, decoder: DecoderClient) -> None:
        self.encoder, self.decoder = encoder, decoder

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
    ) -> PipelineStream:
        """`latent_only`: the decoder gets the latents alone (no present audio on the wire)."""
        present = tuple(present)
        encoder = self.encoder.stream(
            model, present, chunk_frames, version, keep_audio=not latent_only
        )
        bound = encoder.info.model
        try:
            decoder = self.decoder.stream(
                bound.name, chunk_frames, bound.version, seed, () if latent_only else present
            )
        except BaseException:
            encoder.cancel()
            raise
        return join(encoder, decoder)

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
