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
    # a stream that sends no chunk this long holds a slot for nothing -> DEADLINE_EXCEEDED; a
    # real-time stream sends one every few ms, a paused one is cheap to reopen
    first_chunk_timeout_s: float = 30.0  # from opening the stream to its first chunk
    idle_timeout_s: float = 60.0  # between chunks (config updates do not count)
    # streams of one peer address (behind a proxy every client shares the proxy's address)
    max_streams_per_peer: int = 64
    # every call at once, streams included; over it gRPC answers RESOURCE_EXHAUSTED
    max_rpcs: int = 256
    # transport: ping idle connections so a vanished client's streams end (and free their slots)
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # a client pinging more often than this gets a strike; past `max_ping_strikes` it is sent
    # GOAWAY (too_many_pings): long audio streams may ping every 30 s
    min_ping_interval_s: float = 20.0
    max_ping_strikes: int = 2

    def __post_init__(self) -> None:
        for name in (
            "max_streams", "max_chunk_frames", "credit", "max_batch", "max_streams_per_peer",
            "max_rpcs",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be >= 1, got {getattr(self, name)}")
        for name in ("first_chunk_timeout_s", "idle_timeout_s", "keepalive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"limit {name} must be > 0, got {getattr(self, name)}")
        if self.max_rpcs < self.max_streams:
            raise ValueError(
                f"--max-rpcs {self.max_rpcs} is below --max-streams {self.max_streams}: "
                "every stream is a call, raise --max-rpcs"
            )

    def grpc_options(self) -> list[tuple[str, int]]:
        """gRPC server channel arguments: message sizes, keepalive and the ping-strike policy."""
        ms = lambda seconds: int(seconds * 1000)  # noqa: E731
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", ms(self.keepalive_s)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", ms(self.min_ping_interval_s)),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
        ]

    @property
    def max_message_bytes(self) -> int:
        """Send/receive limit: a full chunk of MAX_CHANNELS channels, or a clip of the same size."""
        return self.max_chunk_frames * MAX_CHANNELS * FLOAT_BYTES + _ENVELOPE

    def max_clip_frames(self, channels: int, sample_rate: int) -> int:
        """Longest unary clip for a model: bounded by seconds and by the message size."""
        by_size = (self.max_message_bytes - _ENVELOPE) // (channels * FLOAT_BYTES)
        return int(min(by_size, self.max_clip_seconds * sample_rate))
