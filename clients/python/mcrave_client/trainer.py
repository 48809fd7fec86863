"""Client for the trainer service: submit, watch, cancel, resume and publish training jobs, and
fetch published model versions into a local registry folder; plus `mcrave-client train ...`.

    mcrave-client train submit DATASET --trainer HOST:PORT [--config test --steps 500 ...]
    mcrave-client train watch JOB --trainer HOST:PORT
    mcrave-client train cancel|resume JOB --trainer HOST:PORT
    mcrave-client train publish JOB --trainer HOST:PORT [--name NAME]
    mcrave-client train list --trainer HOST:PORT
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError, from_rpc_error
from mcrave_client.proto import trainer_pb2, trainer_pb2_grpc

T = TypeVar("T")
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED")
MANIFEST = "manifest.json"  # a version's file list and digests (mcrave.registry writes it)
MAX_FETCH_BYTES = 4 << 30  # one version's files together: far above any model, far below a disk


def _check_component(value: str, what: str) -> None:
    """Names a trainer sends become path components here: nothing that could leave the folder."""
    if (
        not value
        or value.startswith(".")  # "..", hidden and staging names
        or any(c in value for c in "/\\\0")
        or os.path.isabs(value)
    ):
        raise ClientError(f"bad {what} {value!r}: one path component, not hidden")


def check_model_name(name: str) -> None:
    """A registry model name: one path component that is not a version number (ClientError)."""
    _check_component(name, "model name")
    if name.isdigit():
        raise ClientError(f"bad model name {name!r}: digits only name a version")


class TrainerClient:
    """Blocking client; every failure is a ClientError with a one-line message."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channel = connection.channel()
        self._stub = trainer_pb2_grpc.TrainerServiceStub(self._channel)

    def __enter__(self) -> TrainerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except grpc.RpcError as err:
            raise from_rpc_error(
                err, "trainer", self.connection.target, self.connection.secure
            ) from None

    def _unary(self, method: str, request: Any) -> Any:
        rpc = getattr(self._stub, method)
        return self._call(lambda: rpc(request, metadata=self.connection.metadata()))

    def submit(
        self,
        dataset: str,
        *,
        config: str = "",
        projection: str = "",
        channels: int = 0,
        max_steps: int = 0,
        overrides: tuple[str, ...] = (),
        backend: str = "",
        resources: trainer_pb2.Resources | None = None,
        seed: int = 0,
        model_name: str = "",
        job_id: str = "",
    ) -> trainer_pb2.Job:
        spec = trainer_pb2.JobSpec(
            dataset=dataset, config=config, projection=projection, channels=channels,
            max_steps=max_steps, overrides=list(overrides), backend=backend,
            resources=resources, seed=seed, model_name=model_name,
        )  # fmt: skip
        return self._unary("SubmitJob", trainer_pb2.SubmitJobRequest(spec=spec, job_id=job_id))

    def get(self, job_id: str) -> trainer_pb2.Job:
        return self._unary("GetJob", trainer_pb2.GetJobRequest(job_id=job_id))

    def list(self, states: tuple[str, ...] = (), limit: int = 0) -> list[trainer_pb2.Job]:
        request = trainer_pb2.ListJobsRequest(
            states=[trainer_pb2.JobState.Value(s) for s in states], limit=limit
        )
        return list(self._unary("ListJobs", request).jobs)

    def watch(self, job_id: str, log_lines: int = 0) -> Iterator[trainer_pb2.JobEvent]:
        """Events until the job's final state (the first is a snapshot of it now)."""
        request = trainer_pb2.WatchJobRequest(job_id=job_id, log_lines=log_lines)
        stream = self._call(
            lambda: self._stub.WatchJob(request, metadata=self.connection.metadata())
        )
        iterator = iter(stream)
        while True:
            event = self._call(lambda: next(iterator, None))
            if event is None:
                return
            yield event

    def wait(self, job_id: str) -> trainer_pb2.Job:
        """Block until the job reaches a final state; returns it."""
        job = self.get(job_id)
        for event in self.watch(job_id):
            job = event.job
        return job

    def cancel(self, job_id: str) -> trainer_pb2.Job:
        return self._unary("CancelJob", trainer_pb2.CancelJobRequest(job_id=job_id))

    def resume(self, job_id: str) -> trainer_pb2.Job:
        return self._unary("ResumeJob", trainer_pb2.ResumeJobRequest(job_id=job_id))

    def publish(
        self, job_id: str, name: str = "", best: bool = False, torchscript: bool = True
    ) -> trainer_pb2.PublishModelResponse:
        """Add the job's checkpoint to the registry as a new version, with its nn~ `model.ts`
        unless `torchscript=False` (as `mcrave publish` does)."""
        request = trainer_pb2.PublishModelRequest(
            job_id=job_id, name=name, best=best, torchscript=torchscript
        )
        return self._unary("PublishModel", request)

    def versions(self, name: str = "") -> list[trainer_pb2.ModelVersion]:
        return list(
            self._unary("ListVersions", trainer_pb2.ListVersionsRequest(name=name)).versions
        )

    def fetch(
        self, name: str, version: int, models: Path, max_bytes: int = MAX_FETCH_BYTES
    ) -> Path:
        """Download a published version into `models/name/<version>`, atomically: files land in
        a hidden staging folder, every one is checked against the version's sha256 (none more,
        none less, at most `max_bytes` in all), then the folder is renamed into place."""
        check_model_name(name)
        request = trainer_pb2.FetchModelRequest(name=name, version=version)
        entry = Path(models) / name
        entry.mkdir(parents=True, exist_ok=True)
        staging = entry / f".pull-{os.getpid()}-{time.monotonic_ns()}"
        staging.mkdir()
        try:
            meta = self._receive(request, staging, max_bytes)
            target = entry / str(meta.version)
            if target.exists():
                return target  # another puller got there first
            os.rename(staging, target)
            _fsync_dir(entry)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _receive(
        self, request: trainer_pb2.FetchModelRequest, staging: Path, max_bytes: int
    ) -> trainer_pb2.ModelVersion:
        meta, out, current, total = None, None, "", 0
        digests: dict[str, Any] = {}
        chunks = self._call(
            lambda: iter(self._stub.FetchModel(request, metadata=self.connection.metadata()))
        )
        try:
            while (chunk := self._call(lambda: next(chunks, None))) is not None:
                if chunk.HasField("version"):
                    meta = chunk.version
                if chunk.file:
                    if out:
                        _close(out)
                        out = None
                    _check_component(chunk.file, "file name from the trainer")
                    if chunk.file in digests:
                        raise ClientError(f"trainer sent {chunk.file!r} twice")
                    current = chunk.file
                    out = open(staging / current, "xb")  # noqa: SIM115 - closed by _close
                    digests[current] = hashlib.sha256()
                if out is None:
                    raise ClientError("trainer sent data before a file name")
                total += len(chunk.data)
                if total > max_bytes:
                    raise ClientError(
                        f"{request.name}: the trainer sent over {max_bytes} bytes (the cap)"
                    )
                out.write(chunk.data)
                digests[current].update(chunk.data)
        finally:
            if out:
                _close(out)
        if meta is None:
            raise ClientError(f"trainer sent no version for {request.name}")
        where = f"{request.name}/{meta.version}"
        expected = dict(meta.sha256)
        if set(digests) != {*expected, MANIFEST}:
            raise ClientError(
                f"{where}: the trainer sent files {sorted(digests)}, its manifest lists "
                f"{sorted(expected)} (+ {MANIFEST})"
            )
        for fname, digest in expected.items():
            if digests[fname].hexdigest() != digest:
                raise ClientError(f"{where}: {fname} failed its sha256 check")
        try:
            listed = json.loads((staging / MANIFEST).read_bytes()).get("sha256")
        except (ValueError, AttributeError):
            listed = None
        if listed != expected:
            raise ClientError(f"{where}: {MANIFEST} disagrees with the digests the trainer sent")
        _fsync_dir(staging)
        return meta


def _close(f) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- mcrave-client train ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcrave-client train", description="training jobs")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--trainer", required=True, metavar="HOST:PORT")
    common.add_argument("--tls-ca", type=Path, help="CA certificate (PEM): connect with TLS")
    common.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mTLS")
    common.add_argument("--tls-key", type=Path, help="client private key (PEM) for mTLS")
    common.add_argument("--token-file", type=Path, help="file holding a bearer token")
    sub = parser.add_subparsers(dest="action", required=True)
    submit = sub.add_parser("submit", parents=[common], help="submit a job; prints its id")
    submit.add_argument("dataset", help="dataset folder, relative to the trainer's data root")
    submit.add_argument("--config", default="", help="preset: test, cpu-small, v2")
    submit.add_argument("--projection", default="")
    submit.add_argument("--channels", type=int, default=0, help="expected N (checked)")
    submit.add_argument("--steps", type=int, default=0, help="max steps (default: preset's)")
    submit.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    submit.add_argument("--backend", default="", help="local or kubernetes (default: trainer's)")
    submit.add_argument("--nnodes", type=int, default=0)
    submit.add_argument("--nproc-per-node", type=int, default=0)
    submit.add_argument("--gpus-per-node", type=int, default=0)
    submit.add_argument("--name", default="", help="model name to publish under")
    submit.add_argument("--job-id", default="")
    submit.add_argument("--watch", action="store_true", help="then watch it to the end")
    for name, what in (
        ("watch", "follow a job until it ends"),
        ("cancel", "checkpoint and stop a job"),
        ("resume", "continue a stopped job from its last checkpoint"),
        ("publish", "add a job's checkpoint to the registry as a new version"),
    ):
        action = sub.add_parser(name, parents=[common], help=what)
        action.add_argument("job_id", metavar="JOB")
        if name == "publish":
            action.add_argument("--name", default="")
            action.add_argument("--best", action="store_true")
            action.add_argument(
                "--no-ts", action="store_true", help="skip the nn~ model.ts (as `mcrave publish`)"
            )
            # the old opt-in, now the default: accepted and ignored
            action.add_argument("--torchscript", action="store_true", help=argparse.SUPPRESS)
        if name == "watch":
            action.add_argument("--log-lines", type=int, default=0)
    listing = sub.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--state", action="append", default=[], choices=_STATES)
    return parser


_STATES = [s for s in trainer_pb2.JobState.keys() if s != "JOB_STATE_UNSPECIFIED"]


# the losses people watch first (the trainer's own order); others follow alphabetically, up to 5
_MAIN_LOSSES = ("loss", "spectral", "spatial_spectral", "interchannel", "kl", "adversarial")


def _main_losses(losses: dict[str, float], limit: int = 5) -> str:
    ranked = sorted(losses, key=lambda k: (_MAIN_LOSSES.index(k) if k in _MAIN_LOSSES else 99, k))
    return " ".join(f"{k}={losses[k]:.4g}" for k in ranked[:limit])


def _line(job: trainer_pb2.Job) -> str:
    state = trainer_pb2.JobState.Name(job.state)
    losses = _main_losses(dict(job.losses))
    steps = f"{job.step}/{job.max_steps or '?'}"
    eta = f" eta {job.eta_seconds:.0f}s" if state == "RUNNING" and job.eta_seconds else ""
    speed = f" {job.x_realtime:.1f}x" if job.x_realtime else ""
    note = f" ({job.message})" if job.message else ""
    return f"{job.id}\t{state}\tstep {steps}{speed}{eta}\t{losses}{note}"


def _watch(client: TrainerClient, job_id: str, log_lines: int) -> int:
    job = None
    for event in client.watch(job_id, log_lines):
        job = event.job
        print(f"[{event.kind}] {_line(job)}", flush=True)
        for line in event.log_tail:
            print(f"    | {line}")
    return 0 if job is not None and trainer_pb2.JobState.Name(job.state) == "SUCCEEDED" else 1


def _run(args: argparse.Namespace) -> int:
    conn = Connection.from_files(
        args.trainer, args.tls_ca, args.tls_cert, args.tls_key, args.token_file
    )
    with TrainerClient(conn) as client:
        if args.action == "submit":
            resources = trainer_pb2.Resources(
                nnodes=args.nnodes, nproc_per_node=args.nproc_per_node,
                gpus_per_node=args.gpus_per_node,
            )  # fmt: skip
            job = client.submit(
                args.dataset, config=args.config, projection=args.projection,
                channels=args.channels, max_steps=args.steps, overrides=tuple(args.set),
                backend=args.backend, resources=resources, model_name=args.name,
                job_id=args.job_id,
            )  # fmt: skip
            print(job.id, flush=True)
            return _watch(client, job.id, 0) if args.watch else 0
        if args.action == "watch":
            return _watch(client, args.job_id, args.log_lines)
        if args.action == "publish":
            done = client.publish(args.job_id, args.name, args.best, torchscript=not args.no_ts)
            print(f"published {done.name} v{done.version} (step {done.step})")
            return 0
        if args.action == "list":
            for job in client.list(tuple(args.state)):
                print(_line(job))
            return 0
        job = client.cancel(args.job_id) if args.action == "cancel" else client.resume(args.job_id)
        print(_line(job))
        return 0


def main(argv: list[str] | None = None) -> int:
    """`mcrave-client train ...` (argv without the leading "train")."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ClientError as err:
        print(f"mcrave-client: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcrave-client: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
