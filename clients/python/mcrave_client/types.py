"""Plain value types the SDK hands out, so callers never touch generated protobuf classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcrave_client.proto import models_pb2, stream_pb2


@dataclass(frozen=True)
class ModelRef:
    """One loaded model version, identified by its weights' sha256."""

    name: str
    version: int
    fingerprint: str

    @classmethod
    def from_proto(cls, msg: stream_pb2.ModelRef) -> ModelRef:
        return cls(msg.name, msg.version, msg.fingerprint)


@dataclass(frozen=True)
class ModelInfo:
    """What GetModel says about a model: everything a client needs to stream to it."""

    ref: ModelRef
    channels: int
    sample_rate: int
    ratio: int  # audio frames per latent frame
    latent_size: int
    latency: int  # samples: decoded audio is the input delayed by this
    max_chunk: int
    max_clip: int
    versions: tuple[int, ...]
    created: str
    channel_names: tuple[str, ...] = ()  # one label per channel; empty from older servers

    @classmethod
    def from_proto(cls, msg: models_pb2.ModelInfo) -> ModelInfo:
        return cls(
            ref=ModelRef.from_proto(msg.ref),
            channels=msg.channels,
            sample_rate=msg.sample_rate,
            ratio=msg.ratio,
            latent_size=msg.latent_size,
            latency=msg.latency,
            max_chunk=msg.max_chunk,
            max_clip=msg.max_clip,
            versions=tuple(msg.versions),
            created=msg.created,
            channel_names=tuple(msg.channel_names),
        )


@dataclass(frozen=True)
class StreamInfo:
    """The server's answer to a stream config: the version bound and the credit window."""

    model: ModelRef
    credit: int  # at most this many chunks may be unanswered
    latency: int
    ratio: int
    latent_size: int
    relay_address: str = ""  # a decoder's own address for encoders relaying to it ("": as dialled)

    @classmethod
    def from_proto(cls, msg: stream_pb2.StreamStarted) -> StreamInfo:
        return cls(
            ModelRef.from_proto(msg.model),
            msg.credit,
            msg.latency,
            msg.ratio,
            msg.latent_size,
            msg.relay_address,
        )


@dataclass(frozen=True)
class Latents:
    """One encoder reply: `array` is `(latent_size, frames)`; `chunk` is the wire message that a
    decoder accepts unchanged (it names the model version that made it).

    From an encoder stream opened with `keep_audio=True`, `audio` is the chunk of present channels
    `(len(present), frames)` that produced these latents and `present` its channels: what a
    decoder stream with a present set sends along for the spatial stage (None on the tail flush,
    which stands for silence)."""

    array: np.ndarray
    chunk: stream_pb2.LatentChunk
    audio: np.ndarray | None = None
    present: tuple[int, ...] = ()

    @property
    def final(self) -> bool:
        return self.chunk.final


@dataclass(frozen=True)
class Decoded:
    """One decoder reply: all N channels, `(channels, frames)`; `ack` is the latent chunk's seq."""

    audio: np.ndarray
    seq: int
    ack: int
    final: bool


@dataclass(frozen=True)
class SetPresent:
    """Put in an encoder's input stream to change the present channels from the next chunk on."""

    present: tuple[int, ...]
