"""Where the bridge's audio comes from: a file paced in real time, a live device, or Max.

A source yields `(N, chunk)` float32 blocks of all N model channels (the bridge picks the
present ones) and stops when `stop` is set; `t0` is the wall time of sample 0 (for latency stats).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

from mcrave_client.bridge.sinks import AUDIO_HINT
from mcrave_client.errors import ClientError
from mcrave_client.infer import read_audio


class FileSource:
    """A file played at its own rate: block k is released when it would have been recorded."""

    def __init__(self, path: str, channels: int, sample_rate: int, chunk: int) -> None:
        audio, rate = read_audio(path)
        if rate != sample_rate:
            raise ClientError(f"{path}: sample rate {rate} Hz, the model expects {sample_rate} Hz")
        if audio.shape[0] != channels:
            raise ClientError(f"{path}: {audio.shape[0]} channels, the model has {channels}")
        self.audio, self.rate, self.chunk = audio, rate, chunk
        self.t0 = 0.0

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        self.t0 = time.perf_counter()
        for start in range(0, self.audio.shape[1], self.chunk):
            block = self.audio[:, start : start + self.chunk]
            ready = self.t0 + (start + block.shape[1]) / self.rate
            if stop.wait(max(0.0, ready - time.perf_counter())):
                return
            yield block


class QueueSource:
    """Blocks pushed by someone else (a PortAudio callback, or `/mcrave/audio` from Max)."""

    from_osc = True  # takes /mcrave/audio

    def __init__(self, channels: int, sample_rate: int, chunk: int) -> None:
        self.channels, self.rate, self.chunk = channels, sample_rate, chunk
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=64)
        self._pending = np.zeros((channels, 0), np.float32)
        self.t0 = 0.0
        self.dropped = 0  # frames lost because the bridge fell behind

    def feed(self, frames: np.ndarray) -> None:
        """Append `(N, frames)` audio; whole chunks are queued for the encoder."""
        if not self.t0:  # the first block's first sample was recorded one block ago
            self.t0 = time.perf_counter() - frames.shape[1] / self.rate
        self._pending = np.concatenate([self._pending, frames.astype(np.float32)], axis=1)
        while self._pending.shape[1] >= self.chunk:
            block, self._pending = np.split(self._pending, [self.chunk], axis=1)
            try:
                self._queue.put_nowait(block)
            except queue.Full:
                self.dropped += block.shape[1]

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        while not stop.is_set():
            try:
                yield self._queue.get(timeout=0.05)
            except queue.Empty:
                continue


class DeviceSource(QueueSource):
    """Live input through PortAudio (sounddevice); JACK ports via PortAudio's JACK host API."""

    from_osc = False

    def __init__(self, channels: int, sample_rate: int, chunk: int, device: str | None) -> None:
        super().__init__(channels, sample_rate, chunk)
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise ClientError(
                f"live input needs sounddevice and PortAudio ({exc}); {AUDIO_HINT}"
            ) from None
        self._stream = sounddevice.InputStream(
            samplerate=sample_rate,
            channels=channels,
            blocksize=chunk,
            dtype="float32",
            device=device,
            callback=lambda data, *_: self.feed(data.T.copy()),
        )

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        with self._stream:
            yield from super().blocks(stop)
