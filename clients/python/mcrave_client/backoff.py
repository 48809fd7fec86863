"""Exponential backoff with jitter for reconnecting to a service that is UNAVAILABLE.

UNAVAILABLE is the one status gRPC means as "retry" (a draining or restarting server, a dropped
connection; grpc.io/docs/guides/status-codes); everything else is the caller's problem and fails at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Retry schedule: `attempts` tries in all, waits growing by `factor` up to `max_delay`."""

    attempts: int = 6
    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.2  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.initial < 0 or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need initial >= 0, factor >= 1 and 0 <= jitter < 1")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between tries: `attempts - 1` of them (none when a single try is allowed)."""
        rng = rng or random.Random()
        delay = self.initial
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay) * rng.uniform(1 - self.jitter, 1 + self.jitter)
            delay *= self.factor


NO_RETRY = Backoff(attempts=1)
