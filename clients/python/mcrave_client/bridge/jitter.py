"""A bounded frame buffer between bursty network arrivals and the steady OSC clock.

Latents arrive a chunk (several frames) at a time; the pacer takes one frame per tick. On
underrun the last frame is held (nn~ samples a held value anyway); on overrun the oldest frame
is dropped so delay stays bounded. Both are counted for the status and the bench.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class JitterBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"jitter buffer capacity must be >= 1 frame, got {capacity}")
        self.capacity = capacity
        self._frames: deque[Any] = deque()
        self._lock = threading.Lock()
        self._last: Any = None
        self.underruns = 0
        self.overruns = 0

    def push(self, frame: Any) -> None:
        with self._lock:
            if len(self._frames) == self.capacity:
                self._frames.popleft()
                self.overruns += 1
            self._frames.append(frame)

    def pop(self) -> Any:
        """The next frame; on underrun the last one again (None before any frame arrived)."""
        with self._lock:
            if self._frames:
                self._last = self._frames.popleft()
            elif self._last is not None:
                self.underruns += 1
            return self._last

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
