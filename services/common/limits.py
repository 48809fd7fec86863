"""Explicit serving limits, sized so one chunk of up to 299 channels fits one gRPC message."""

from __future__ import annotations

from dataclasses import dataclass

MAX_CHANNELS = 299  # largest N we size messages for
FLOAT_BYTES = 4
_ENVELOPE = 64 * 1024  # protobuf framing + metadata headroom per message


@dataclass(frozen=True)
class Limits:
    """What one server accepts; everything above is refused with a status naming the limit."""

    max_streams: int = 64  # concurrent Encode/Decode streams -> RESOURCE_EXHAUSTED
    max_chunk_frames: int = 8192  # audio frames per chunk -> INVALID_ARGUMENT
    max_clip_seconds: float = 60.0  # unary EncodeClip/DecodeClip length -> INVALID_ARGUMENT
    credit: int = 4  # chunks a client may keep unanswered (advertised in StreamStarted)
    max_batch: int = 16  # streams joined into one forward
    max_wait_s: float = 0.005  # longest a chunk waits for others to join its batch
    reply_timeout_s: float = 30.0  # a client that reads no reply this long -> RESOURCE_EXHAUSTED

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_chunk_frames", "credit", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be >= 1, got {getattr(self, name)}")

    @property
    def max_message_bytes(self) -> int:
        """Send/receive limit: a full chunk of MAX_CHANNELS channels, or a clip of the same size."""
        return self.max_chunk_frames * MAX_CHANNELS * FLOAT_BYTES + _ENVELOPE

    def max_clip_frames(self, channels: int, sample_rate: int) -> int:
        """Longest unary clip for a model: bounded by seconds and by the message size."""
        by_size = (self.max_message_bytes - _ENVELOPE) // (channels * FLOAT_BYTES)
        return int(min(by_size, self.max_clip_seconds * sample_rate))
