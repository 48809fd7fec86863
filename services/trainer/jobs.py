"""The job manager: validates submissions, launches them on a backend, supervises every active job
from one loop (backend status + the run's progress log), announces events to watchers, and
reconciles on start what a previous trainer left running.

Every state change is saved to the store before it is announced or answered.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from mcrave.config import PRESET_NAMES, PROJECTIONS, apply_overrides, preset
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)
from services.trainer.backend import Backend, RunStatus
from services.trainer.progress import ProgressTail, apply
from services.trainer.store import ACTIVE, DuplicateJob, JobRecord, JobStore

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
# Kubernetes quantities: "2", "500m", "1.5", "4Gi", "512M"
QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
SCALE = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
SCALE |= {f"{p}i": 1024.0 ** (i + 1) for i, p in enumerate("KMGTP")}
GIB = 1024**3


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


@dataclass(frozen=True)
class JobLimits:
    """The most one job may ask for (`mcrave serve trainer --job-max-*`); more is refused with
    INVALID_ARGUMENT before anything is launched. A job is code run on the trainer's machines:
    without bounds one submit could ask for every core, GPU and byte of memory there is."""

    max_nodes: int = 8
    max_procs_per_node: int = 8
    max_gpus_per_node: int = 8
    max_cpu: float = 64.0  # cores per node
    max_memory_gib: float = 256.0  # per node

    def check(self, resources: dict[str, Any], backend: str) -> None:
        """Check a JobSpec.resources (proto JSON field names)."""
        counts = (
            ("nnodes", 1 if backend == "local" else self.max_nodes),
            ("nproc_per_node", self.max_procs_per_node),
            ("gpus_per_node", self.max_gpus_per_node),
        )
        for name, most in counts:
            value = int(resources.get(name, 0))
            if value > most:
                where = " (the local backend runs on this machine)" if most == 1 else ""
                raise InvalidArgument(
                    f"resources.{name} {value} is over the limit of {most}{where}", "resources"
                )
        amounts = (("cpu", self.max_cpu, 1, ""), ("memory", self.max_memory_gib, GIB, " GiB"))
        for name, most, unit, shown in amounts:
            text = resources.get(name, "")
            if not text:
                continue
            match = QUANTITY.match(text)
            if not match or (name == "cpu" and match[2] not in (None, "m")):
                raise InvalidArgument(
                    f"resources.{name} {text!r} is not a Kubernetes quantity (e.g. "
                    f"{'2 or 500m' if name == 'cpu' else '4Gi'})",
                    "resources",
                )
            amount = float(match[1]) * SCALE[match[2] or ""] / unit
            if not 0 < amount <= most:
                raise InvalidArgument(
                    f"resources.{name} {text!r} is outside 0 < {name} <= {most:g}{shown}",
                    "resources",
                )


@dataclass(frozen=True)
class Paths:
    data_root: Path
    runs_dir: Path
    models: Path


def resolve_dataset(data_root: Path, dataset: str) -> Path:
    """The dataset folder under `data_root`; anything that would leave it is refused."""
    if not dataset:
        raise InvalidArgument("spec.dataset is empty: give a folder under the data root", "dataset")
    if Path(dataset).is_absolute() or "\\" in dataset:
        raise InvalidArgument(
            f"dataset {dataset!r} must be relative to the data root", "dataset-escape"
        )
    root = data_root.resolve()
    path = (root / dataset).resolve()  # follows symlinks: a link out of the root is caught too
    if path != root and root not in path.parents:
        raise InvalidArgument(f"dataset {dataset!r} is outside the data root", "dataset-escape")
    if not (path / "manifest.json").is_file():
        raise InvalidArgument(
            f"dataset {dataset!r} has no manifest.json (run `mcrave prepare` first)", "dataset"
        )
    return path


def validate_spec(
    spec: dict[str, Any], paths: Paths, backends: dict[str, Backend], limits: JobLimits
) -> Path:
    """Check a submitted JobSpec (proto field names); returns the dataset folder."""
    dataset = resolve_dataset(paths.data_root, spec.get("dataset", ""))
    if spec.get("config", "cpu-small") not in PRESET_NAMES:
        raise InvalidArgument(f"unknown config {spec['config']!r}: one of {PRESET_NAMES}", "config")
    if spec.get("projection", "identity") not in PROJECTIONS:
        raise InvalidArgument(
            f"unknown projection {spec['projection']!r}: one of {PROJECTIONS}", "projection"
        )
    if spec.get("backend") not in backends:
        raise InvalidArgument(
            f"backend {spec.get('backend')!r} is not available here: {sorted(backends)}", "backend"
        )
    limits.check(spec.get("resources", {}), spec["backend"])
    try:
        manifest = json.loads((dataset / "manifest.json").read_text())
        channels = int(manifest["channels"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"dataset {spec['dataset']!r}: bad manifest.json ({exc})", "dataset"
        ) from exc
    wanted = int(spec.get("channels", 0))
    if wanted and wanted != channels:
        raise InvalidArgument(
            f"spec.channels is {wanted} but dataset {spec['dataset']!r} has {channels}", "channels"
        )
    try:  # the config `mcrave train` will build: unknown keys, bad values and types refused here
        base = preset(
            spec.get("config", "cpu-small"),
            channels=channels,
            projection=spec.get("projection", "identity"),
        )
        apply_overrides(base, list(spec.get("overrides", [])))
    except ValueError as exc:
        raise InvalidArgument(str(exc), "set") from None
    name = spec.get("model_name", "")
    if name and (not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name) or name.isdigit()):
        raise InvalidArgument(f"model_name {name!r}: letters, digits, '.', '_', '-'", "model-name")
    return dataset


# a job's last metric values stay up this long after it ends, so a short job is still scraped
METRICS_LINGER_S = 10


def train_args(record: JobRecord, dataset: Path, metrics_port: int, resume: bool) -> list[str]:
    """The `mcrave train` arguments of a job (the backend adds the launcher)."""
    spec = record.spec
    steps = int(spec.get("max_steps", 0))
    args = [
        "train", str(dataset), "--config", spec.get("config", "cpu-small"),
        "-o", record.run_dir, "--projection", spec.get("projection", "identity"),
        "--seed", str(int(spec.get("seed", 0))), "--metrics-port", str(metrics_port),
        "--metrics-linger", str(METRICS_LINGER_S),
        "--log-every", str(max(1, min(10, steps // 50))) if steps else "10",
    ]  # fmt: skip
    if steps:
        args += ["--steps", str(steps)]
    for item in spec.get("overrides", []):
        args += ["--set", item]
    return [*args, "--resume"] if resume else args


class JobManager:
    def __init__(
        self,
        store: JobStore,
        backends: dict[str, Backend],
        default_backend: str,
        paths: Paths,
        *,
        poll_s: float = 0.5,
        cancel_grace_s: float = 120.0,
        max_active: int = 4,
        job_limits: JobLimits = JobLimits(),
        on_change: Callable[[JobManager], None] | None = None,
        on_steps: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.backends = backends
        self.default_backend = default_backend
        self.paths = paths
        self.poll_s = poll_s
        self.cancel_grace_s = cancel_grace_s
        self.max_active = max_active  # jobs running at once (a machine has so many cores)
        self.job_limits = job_limits
        self.on_change = on_change  # metrics and service discovery refresh
        self.on_steps = on_steps
        self._tails: dict[str, ProgressTail] = {}
        self._watchers: dict[str, set[asyncio.Queue]] = {}
        self._task: asyncio.Task | None = None
        # held from a capacity check to the record that takes the place (and by cancel/resume)
        self._lock = asyncio.Lock()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Reconcile jobs a previous trainer left active, then supervise."""
        for record in self.store.list(ACTIVE, limit=10_000):
            if record.backend not in self.backends:
                record.state, record.message = "INTERRUPTED", "backend unavailable after restart"
                self.store.save(record)
                continue
            log.info("re-attaching job %s (%s)", record.id, record.state)
        await self.tick(reconciling=True)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - supervision must go on
                log.exception("job supervision failed")

    # ---- requests --------------------------------------------------------------------------
    async def submit(self, spec: dict[str, Any], job_id: str = "") -> JobRecord:
        spec = {**spec, "backend": spec.get("backend") or self.default_backend}
        if job_id and not JOB_ID.match(job_id):
            raise InvalidArgument(
                f"job_id {job_id!r}: lowercase letters, digits and '-', 2-32 long", "job-id"
            )
        loop = asyncio.get_running_loop()
        # file system reads (the data root may be a network mount): off the event loop
        dataset = await loop.run_in_executor(
            None, validate_spec, spec, self.paths, self.backends, self.job_limits
        )
        job_id = job_id or f"j{time.strftime('%m%d%H%M')}-{secrets.token_hex(3)}"
        record = JobRecord(
            id=job_id,
            spec=spec,
            backend=spec["backend"],
            run_dir=str(self.paths.runs_dir / job_id),
            max_steps=int(spec.get("max_steps", 0)),
        )
        async with self._lock:  # concurrent submits: each sees the places the others took
            self._check_capacity()
            try:
                self.store.insert(record)  # PENDING counts as active from here on
            except DuplicateJob:
                raise AlreadyExists(f"job {job_id!r} exists already", "duplicate-job") from None
        await self._launch(record, dataset, resume=False)
        return record

    def _check_capacity(self) -> None:
        active = len(self.store.list(ACTIVE, limit=10_000))
        if active >= self.max_active:
            raise ResourceExhausted(
                f"{active} jobs are active (limit {self.max_active}): cancel one or retry later",
                "too-many-jobs",
            )

    async def _launch(self, record: JobRecord, dataset: Path, resume: bool) -> None:
        backend = self.backends[record.backend]
        args = train_args(record, dataset, backend.metrics_port, resume)
        loop = asyncio.get_running_loop()
        try:
            handle = await loop.run_in_executor(None, backend.start, record, args)
        except Exception as exc:  # noqa: BLE001 - a launch failure is the job's, not the server's
            log.exception("job %s failed to start", record.id)
            record.state, record.message = "FAILED", f"could not start: {exc}"
        else:
            record.handle, record.state, record.message = handle, "RUNNING", ""
        # a resumed run appends to its log: follow only what the new attempt writes
        self._tails[record.id] = ProgressTail(Path(record.run_dir), from_end=resume)
        self.store.save(record)
        self._announce(record, "state")

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}", "unknown-job")
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        async with self._lock:
            record = self.get(job_id)
            if record.final:
                raise FailedPrecondition(f"job {job_id} is already {record.state}", "job-finished")
            if record.state != "CANCELLING":
                record.state = "CANCELLING"
                record.handle["cancel_deadline"] = time.time() + self.cancel_grace_s
                self.store.save(record)  # durable before the signal: a restart still cancels
                backend = self.backends[record.backend]
                await asyncio.get_running_loop().run_in_executor(None, backend.stop, record)
                self._announce(record, "state")
            return record

    async def resume(self, job_id: str) -> JobRecord:
        async with self._lock:
            record = self.get(job_id)
            if not resumable(record):
                why = "has no checkpoint" if record.final else f"is {record.state}"
                raise FailedPrecondition(f"job {job_id} cannot resume: it {why}", "not-resumable")
            if record.backend not in self.backends:
                raise FailedPrecondition(f"backend {record.backend} is unavailable", "backend")
            dataset = resolve_dataset(self.paths.data_root, record.spec["dataset"])
            self._check_capacity()
            record.attempt += 1
            record.state, record.message = "PENDING", ""
            record.handle = {}
            self.store.save(record)
            await self._launch(record, dataset, resume=True)
            return record

    async def log_tail(self, record: JobRecord, lines: int) -> list[str]:
        backend = self.backends.get(record.backend)
        if lines <= 0 or backend is None:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, backend.log_tail, record, lines)

    def mark_published(self, record: JobRecord, name: str, version: int) -> None:
        record = self.get(record.id)  # the loop may have saved progress meanwhile
        record.published.append(f"{name}/{version}")
        self.store.save(record)

    async def watch(self, job_id: str) -> AsyncIterator[tuple[str, JobRecord]]:
        """The job now, then each event, until (and including) its final state."""
        record = self.get(job_id)  # NOT_FOUND before anything is registered
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        watchers = self._watchers.setdefault(job_id, set())
        watchers.add(queue)
        try:
            yield "snapshot", record
            while not record.final:
                kind, record = await queue.get()
                yield kind, record
        finally:
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(job_id, None)

    @property
    def watching(self) -> int:
        """Open WatchJob streams (queues registered for events)."""
        return sum(len(queues) for queues in self._watchers.values())

    # ---- supervision -----------------------------------------------------------------------
    async def tick(self, reconciling: bool = False) -> None:
        """One supervision pass over every active job (`reconciling`: the first after a start)."""
        loop = asyncio.get_running_loop()
        changed = False
        for record in self.store.list(ACTIVE, limit=10_000):
            backend = self.backends.get(record.backend)
            if backend is None:
                continue
            if not record.handle:  # still being launched, or a trainer died while launching it
                if reconciling:
                    record.state, record.message = "INTERRUPTED", "the trainer stopped starting it"
                    self.store.save(record)
                continue
            status: RunStatus = await loop.run_in_executor(None, backend.status, record)
            # re-read: a request may have changed the record while the backend answered
            record = self.store.get(record.id) or record
            tail = self._tails.setdefault(record.id, ProgressTail(Path(record.run_dir)))
            before, events, read = record.step, [], tail.read()
            for event in read:
                kind = apply(record, event)
                if kind:
                    events.append((kind, copy.deepcopy(record)))
            if self.on_steps and record.step > before:
                self.on_steps(record.step - before)
            dirty = bool(read) or not status.running
            if not status.running:
                self._finish(record, status, reconciling)
                try:
                    await loop.run_in_executor(None, backend.cleanup, record)
                except Exception:  # noqa: BLE001 - leftovers must not keep the job active
                    log.exception("job %s: cleanup failed", record.id)
                events.append(("state", record))
            elif record.state == "CANCELLING" and time.time() > record.handle["cancel_deadline"]:
                record.message = "no checkpoint within the grace period: killed"
                await loop.run_in_executor(None, backend.kill, record)
                dirty = True
            if dirty:
                self.store.save(record)  # durable before anyone hears of it
                changed = True
                for kind, snapshot in events:
                    self._announce(snapshot, kind)
        if changed and self.on_change:
            self.on_change(self)

    def _finish(self, record: JobRecord, status: RunStatus, reconciling: bool) -> None:
        outcome = record.handle.get("outcome")
        if record.state == "CANCELLING":
            record.state = "CANCELLED"
        elif outcome == "done" or (status.exit_code == 0 and outcome != "stop"):
            record.state = "SUCCEEDED"  # the log says so, or the backend does (a Complete Job)
        elif reconciling:
            record.state, record.message = "INTERRUPTED", "stopped while the trainer was down"
        elif outcome == "stop":
            record.state, record.message = (
                "INTERRUPTED",
                "stopped by a signal the trainer did not send",
            )
        else:
            record.state = "FAILED"
            record.message = status.message or "training exited without finishing"
        self._tails.pop(record.id, None)
        log.info("job %s %s %s", record.id, record.state, record.message)

    def _announce(self, record: JobRecord, kind: str) -> None:
        for queue in self._watchers.get(record.id, ()):
            if queue.full():  # a slow watcher loses intermediate steps, never the final state
                queue.get_nowait()
            queue.put_nowait((kind, copy.deepcopy(record)))


def resumable(record: JobRecord) -> bool:
    return (
        record.state in ("FAILED", "CANCELLED", "INTERRUPTED") and record.last_checkpoint.exists()
    )
