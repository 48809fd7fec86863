"""Job records in SQLite (WAL, synchronous=FULL): every state change is committed before the
trainer acts on it or answers, so a kill -9 of the trainer loses no job.

The database must sit on a local file system (WAL needs shared memory that network file systems
do not provide): `--jobs-dir` on a node-local or ReadWriteOnce volume.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ACTIVE = ("PENDING", "RUNNING", "CANCELLING")
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED")


class DuplicateJob(KeyError):
    """A job with this id exists already."""


@dataclass
class JobRecord:
    id: str
    spec: dict[str, Any]  # the submitted JobSpec, as proto JSON (field names as in the proto)
    backend: str
    run_dir: str
    state: str = "PENDING"
    handle: dict[str, Any] = field(default_factory=dict)  # the backend's: pid or object names
    step: int = 0
    max_steps: int = 0
    checkpoint_step: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    x_realtime: float = 0.0
    eta_seconds: float = 0.0
    message: str = ""
    published: list[str] = field(default_factory=list)
    attempt: int = 0  # 0 for the first run, +1 per resume
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def last_checkpoint(self) -> Path:
        return Path(self.run_dir) / "last.ckpt"


class JobStore:
    def __init__(self, jobs_dir: Path) -> None:
        jobs_dir.mkdir(parents=True, exist_ok=True)
        self.path = jobs_dir / "jobs.sqlite3"
        # autocommit: each statement is its own durable transaction
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs ("
            " id TEXT PRIMARY KEY, state TEXT NOT NULL, created REAL NOT NULL, record TEXT NOT NULL)"
        )

    def insert(self, record: JobRecord) -> None:
        try:
            self._db.execute(
                "INSERT INTO jobs (id, state, created, record) VALUES (?, ?, ?, ?)",
                (record.id, record.state, record.created, json.dumps(asdict(record))),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateJob(record.id) from exc

    def save(self, record: JobRecord) -> None:
        record.updated = time.time()
        self._db.execute(
            "UPDATE jobs SET state = ?, record = ? WHERE id = ?",
            (record.state, json.dumps(asdict(record)), record.id),
        )

    def get(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord(**json.loads(row[0])) if row else None

    def list(self, states: tuple[str, ...] = (), limit: int = 100) -> list[JobRecord]:
        """Newest first."""
        query, args = "SELECT record FROM jobs", []
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            args += list(states)
        rows = self._db.execute(query + " ORDER BY created DESC LIMIT ?", (*args, limit))
        return [JobRecord(**json.loads(r[0])) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return dict(rows.fetchall())

    def close(self) -> None:
        self._db.close()
