"""Raw PCM/latent framing: numpy arrays <-> the little-endian float32 `bytes` the services carry.

Payloads travel as `bytes`, not `repeated float`: building them is far cheaper
(no per-element work in protobuf's Python runtime). Arrays are channel-major `(channels, frames)` on the numpy side, like the model; the
wire layout is frame-major `(frames, channels)` (interleaved, like a WAV file), as the protos say.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

WIRE_DTYPE = np.dtype("<f4")


class FramingError(ValueError):
    """A payload whose size or content does not match what the stream declared."""


def pack(array: np.ndarray) -> bytes:
    """`(channels, frames)` array -> interleaved little-endian float32 bytes."""
    if array.ndim != 2:
        raise FramingError(f"expected a (channels, frames) array, got shape {array.shape}")
    return np.ascontiguousarray(array.T, dtype=WIRE_DTYPE).tobytes()


def unpack(payload: bytes, channels: int) -> np.ndarray:
    """Interleaved float32 bytes -> `(channels, frames)` float32, checking the length is exact."""
    if channels < 1:
        raise FramingError(f"channels must be >= 1, got {channels}")
    frame_bytes = channels * WIRE_DTYPE.itemsize
    if len(payload) % frame_bytes:
        raise FramingError(
            f"payload of {len(payload)} bytes is not a whole number of {channels}-channel "
            f"float32 frames ({frame_bytes} bytes each)"
        )
    frames = len(payload) // frame_bytes
    return np.frombuffer(payload, dtype=WIRE_DTYPE).reshape(frames, channels).T.astype(np.float32)


def iter_chunks(array: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Successive `(channels, <=chunk)` slices of a `(channels, frames)` array, in order."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 frame, got {chunk}")
    for start in range(0, array.shape[1], chunk):
        yield array[:, start : start + chunk]
