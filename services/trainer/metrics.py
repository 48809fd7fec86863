"""The trainer's Prometheus metrics: jobs by state, training steps, request errors.

Labels are bounded (state, method, code); never a job id. Per-job losses come from the jobs'
own `mcrave train --metrics-port` endpoints, which the trainer lists for Prometheus in a file_sd
file (`--sd-file`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.trainer.store import ACTIVE, FINAL

STATES = (*ACTIVE, *FINAL)


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Gauge("mcrave_trainer_jobs", "Jobs by state", ["state"], registry=r)
        self.steps = Counter(
            "mcrave_trainer_steps", "Training steps done by supervised jobs (rate = steps/s)",
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "mcrave_errors", "Requests ended with an error, by method and status code",
            ["method", "code"], registry=r,
        )  # fmt: skip
        Gauge("mcrave_build_info", "Which service this is", ["service"], registry=r).labels(
            "trainer"
        ).set(1)
        for state in STATES:
            self.jobs.labels(state).set(0)

    def set_counts(self, counts: dict[str, int]) -> None:
        for state in STATES:
            self.jobs.labels(state).set(counts.get(state, 0))


def write_sd_file(path: Path, targets: list[str]) -> None:
    """Prometheus file_sd JSON listing running jobs' metrics endpoints (atomic rename)."""
    groups = [{"targets": sorted(targets), "labels": {}}] if targets else []
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)
