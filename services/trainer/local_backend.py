"""Run jobs as subprocesses of this machine: `python -m mcrave.cli.main train ...`, or torchrun
(`python -m torch.distributed.run --standalone`) when a job asks for more than one process.

Each job is the leader of its own session, so it outlives a trainer that is killed or restarted:
the handle keeps its pid and kernel start time, and a new trainer re-attaches to the same process
(a recycled pid has another start time). SIGTERM goes to the whole process group, so every rank
checkpoints and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from services.trainer.backend import RunStatus
from services.trainer.progress import TRAIN_LOG, log_tail
from services.trainer.store import JobRecord


def process_start_time(pid: int) -> int | None:
    """Kernel start time of a live, non-zombie process (None when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # state: zombie or dead
        return None
    return int(fields[19])  # field 22 of stat, counted after "pid (comm)"


class LocalBackend:
    name = "local"
    metrics_port = 0

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._children: dict[str, subprocess.Popen] = {}

    def command(self, record: JobRecord, train_args: list[str]) -> list[str]:
        nproc = int(record.spec.get("resources", {}).get("nproc_per_node") or 1)
        launcher = [sys.executable, "-m", "mcrave.cli.main"]
        if nproc > 1:
            launcher = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc}", "-m", "mcrave.cli.main",
            ]  # fmt: skip
        threads = ["--threads", str(self.threads)] if self.threads else []
        return [*launcher, *train_args, *threads]

    def start(self, record: JobRecord, train_args: list[str]) -> dict:
        run_dir = Path(record.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        with open(run_dir / TRAIN_LOG, "ab") as log:
            proc = subprocess.Popen(
                self.command(record, train_args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self._children[record.id] = proc
        return {"pid": proc.pid, "start_time": process_start_time(proc.pid)}

    def status(self, record: JobRecord) -> RunStatus:
        child = self._children.get(record.id)
        if child is not None:
            code = child.poll()
            if code is None:
                return RunStatus(True)
            del self._children[record.id]
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            return RunStatus(False, code, why)
        # not our child: a process started before this trainer restarted
        pid, started = record.handle.get("pid"), record.handle.get("start_time")
        alive = pid is not None and started is not None and process_start_time(pid) == started
        return RunStatus(alive, None, "" if alive else "process gone (exit status unknown)")

    def _signal(self, record: JobRecord, sig: signal.Signals) -> None:
        if not self.status(record).running:
            return
        try:
            os.killpg(record.handle["pid"], sig)  # session leader: its pid is the group id
        except ProcessLookupError:
            pass

    def stop(self, record: JobRecord) -> None:
        self._signal(record, signal.SIGTERM)

    def kill(self, record: JobRecord) -> None:
        self._signal(record, signal.SIGKILL)

    def cleanup(self, record: JobRecord) -> None:
        child = self._children.pop(record.id, None)
        if child is not None:
            child.wait()

    def log_tail(self, record: JobRecord, lines: int) -> list[str]:
        return log_tail(Path(record.run_dir), lines)
