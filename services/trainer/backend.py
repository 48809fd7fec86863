"""What the job manager needs from a place that runs `mcrave train`: start, status, stop, kill.

Calls may block (Kubernetes API requests): the manager runs them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.trainer.store import JobRecord


@dataclass(frozen=True)
class RunStatus:
    running: bool
    exit_code: int | None = None  # None when unknown (a re-attached process, a deleted pod)
    message: str = ""  # what the backend knows about a failure (pod reason, exit signal)


class Backend(Protocol):
    name: str
    metrics_port: int  # the --metrics-port its jobs get (0 = any free port)

    def start(self, record: JobRecord, train_args: list[str]) -> dict:
        """Launch `mcrave train *train_args`; returns the handle stored in the job record."""
        ...

    def status(self, record: JobRecord) -> RunStatus: ...

    def stop(self, record: JobRecord) -> None:
        """Ask the job to checkpoint and exit (SIGTERM to every rank)."""
        ...

    def kill(self, record: JobRecord) -> None:
        """Stop it now (after the grace period of a stop has passed)."""
        ...

    def cleanup(self, record: JobRecord) -> None:
        """Free what the finished job still holds (Kubernetes objects); idempotent."""
        ...

    def log_tail(self, record: JobRecord, lines: int) -> list[str]:
        """The last `lines` lines of the job's output (rank 0)."""
        ...
