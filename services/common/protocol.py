"""Validation of stream configs and payloads shared by the encoder and decoder.

Every check raises a `ServiceError` whose message says what was wrong and what was expected:
malformed input is INVALID_ARGUMENT, a valid message in the wrong state FAILED_PRECONDITION,
an unknown model NOT_FOUND (gRPC's status-code guide, grpc.io/docs/guides/status-codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mcrave_client.proto import stream_pb2

from mcrave.present import check_present
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.limits import FLOAT_BYTES, Limits
from services.common.registry_watch import LoadedVersion, RegistryWatcher

F32_FORMATS = (stream_pb2.SAMPLE_FORMAT_UNSPECIFIED, stream_pb2.SAMPLE_FORMAT_F32LE)


@dataclass(frozen=True)
class StreamSpec:
    """A validated stream config bound to one loaded model version."""

    model: LoadedVersion
    chunk_frames: int
    present: tuple[int, ...]  # encoder: channels sent; decoder: channels whose audio comes along
    seed: int
    config: stream_pb2.StreamConfig


def max_chunk(model: LoadedVersion, limits: Limits) -> int:
    """Largest chunk (audio frames) this server takes for `model`: a multiple of its ratio."""
    engine = model.engine
    return min(limits.max_chunk_frames, engine.max_chunk) // engine.ratio * engine.ratio


def check_wire_present(present: Sequence[int], channels: int, what: str) -> tuple[int, ...]:
    """The core's present-set rule on a set from the wire (ascending, as the audio's columns);
    a bad set is INVALID_ARGUMENT `bad-present`."""
    try:
        return check_present(present, channels, what=what, ascending=True)
    except ValueError as error:
        raise InvalidArgument(str(error), "bad-present") from None


def bind(
    cfg: stream_pb2.StreamConfig,
    watcher: RegistryWatcher,
    limits: Limits,
    *,
    encoder: bool,
    clip: bool = False,
) -> StreamSpec:
    """Check a first StreamConfig against the model it names and bind the stream to it.

    Unary clips may leave `chunk_frames` at 0 (they are bounded by the clip limit instead).
    """
    if not cfg.model:
        raise InvalidArgument("config.model is empty: name a model (see ListModels)", "bad-config")
    model = watcher.get(cfg.model, cfg.version)
    engine = model.engine
    if cfg.sample_rate != engine.sample_rate:
        raise InvalidArgument(
            f"sample_rate {cfg.sample_rate} != model {model.name} rate {engine.sample_rate} (resample first)",
            "bad-config",
        )
    if cfg.channels != engine.channels:
        raise InvalidArgument(
            f"channels {cfg.channels} != model {model.name} N={engine.channels}", "bad-config"
        )
    if cfg.sample_format not in F32_FORMATS:
        raise InvalidArgument(
            f"sample_format {cfg.sample_format} unsupported: only F32LE", "bad-config"
        )
    limit = max_chunk(model, limits)
    if clip and cfg.chunk_frames == 0:
        pass
    elif cfg.chunk_frames <= 0 or cfg.chunk_frames % engine.ratio or cfg.chunk_frames > limit:
        raise InvalidArgument(
            f"chunk_frames {cfg.chunk_frames}: must be a positive multiple of {engine.ratio}, at most {limit}",
            "bad-chunk-frames",
        )
    # a decoder's present set names the channels whose audio travels with the latents (the
    # spatial stage); empty means latent-only
    if encoder or cfg.present:
        present = check_wire_present(cfg.present, engine.channels, "config.present")
    else:
        present = ()
    return StreamSpec(model, cfg.chunk_frames, present, cfg.seed, cfg)


def update(spec: StreamSpec, cfg: stream_pb2.StreamConfig, *, encoder: bool = True) -> StreamSpec:
    """A mid-stream config: only `present` may change; the rest must be unset or unchanged.
    On a decoder stream an empty present set switches to latent-only."""
    first = spec.config
    if cfg.HasField("relay"):
        raise FailedPrecondition(
            "config update sets relay: a stream is relayed from its first config or not at all",
            "config-change",
        )
    for name in (
        "model",
        "version",
        "sample_rate",
        "channels",
        "chunk_frames",
        "sample_format",
        "seed",
    ):
        value = getattr(cfg, name)
        if value and value != getattr(first, name):
            raise FailedPrecondition(
                f"config update changes {name} ({getattr(first, name)!r} -> {value!r}): a stream keeps "
                "its model, version and format; open a new stream",
                "config-change",
            )
    if encoder or cfg.present:
        present = check_wire_present(cfg.present, spec.model.engine.channels, "config.present")
    else:
        present = ()
    return StreamSpec(spec.model, spec.chunk_frames, present, spec.seed, first)


def read_f32(data: bytes, width: int, max_frames: int, what: str) -> np.ndarray:
    """bytes f32le [frames, width] -> float32 array, checked for length and finiteness."""
    row = width * FLOAT_BYTES
    if not data:
        raise InvalidArgument(f"{what} is empty", "bad-length")
    if len(data) % row:
        raise InvalidArgument(
            f"{what} has {len(data)} bytes, not a multiple of {width} channels x {FLOAT_BYTES} bytes",
            "bad-length",
        )
    frames = len(data) // row
    if frames > max_frames:
        raise InvalidArgument(
            f"{what} has {frames} frames, more than the {max_frames} allowed", "too-long"
        )
    array = np.frombuffer(data, dtype="<f4").reshape(frames, width)
    if not np.isfinite(array).all():
        bad = int(np.argwhere(~np.isfinite(array))[0, 0])
        raise InvalidArgument(f"{what} holds NaN or Inf (first at frame {bad})", "not-finite")
    return array


class SeqCounter:
    """Chunks must arrive numbered 0, 1, 2, ...: a gap means lost or reordered audio."""

    def __init__(self) -> None:
        self.next = 0

    def check(self, seq: int) -> None:
        if seq != self.next:
            raise FailedPrecondition(
                f"sequence gap: expected chunk seq {self.next}, got {seq}", "seq-gap"
            )
        self.next += 1
