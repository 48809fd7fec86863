"""Follow a run's `progress.jsonl` (written by `mcrave train` on rank 0) and fold its events
into the job record. The same file works for both backends: local runs write it directly,
Kubernetes pods write it on the shared runs volume."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from services.trainer.store import JobRecord

PROGRESS_LOG = "progress.jsonl"  # mcrave.training.monitor.PROGRESS_LOG (not imported: no torch)
TRAIN_LOG = "train.log"


class ProgressTail:
    """Reads complete new lines only, so a line being written is picked up on the next read."""

    def __init__(self, run_dir: Path, from_end: bool = False) -> None:
        self.path = run_dir / PROGRESS_LOG
        self._offset = self.path.stat().st_size if from_end and self.path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        events = []
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed writer: skip it, keep following
            if isinstance(event, dict) and "event" in event:
                events.append(event)
        return events


def apply(record: JobRecord, event: dict[str, Any]) -> str | None:
    """Update `record` from one event; returns the event kind to announce, or None."""
    kind = event["event"]
    step = int(event.get("step", record.step))
    if kind == "start":
        record.max_steps = int(event.get("max_steps", record.max_steps))
        record.step = step
        record.handle.pop("outcome", None)  # a resumed run appends to the same log
        if event.get("metrics_port"):
            record.handle["metrics_port"] = int(event["metrics_port"])
        return None
    if kind == "step":
        record.step = step
        record.losses = {k: float(v) for k, v in event.get("losses", {}).items()}
        record.x_realtime = float(event.get("x_realtime", 0.0))
        record.eta_seconds = float(event.get("eta_seconds", 0.0))
        return "step"
    if kind == "checkpoint":
        record.checkpoint_step = step
        return "checkpoint"
    if kind == "validation":
        return "validation"
    if kind in ("done", "stop"):
        record.step = step
        record.handle["outcome"] = kind
        return None
    return None


def log_tail(run_dir: Path, lines: int) -> list[str]:
    """The last `lines` lines of the job's combined stdout/stderr log."""
    if lines <= 0:
        return []
    try:
        with open(run_dir / TRAIN_LOG, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    # tqdm redraws with carriage returns: keep the last state of each line
    rows = (row.rsplit("\r", 1)[-1] for row in text.splitlines())
    return list(deque((r for r in rows if r.strip()), maxlen=lines))
