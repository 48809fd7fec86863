"""TrainerService bad input and security over real gRPC (in-process server, port 0): each refusal
has its exact status code and a message naming the problem; nothing is launched for a refused
job. Health answers on the plaintext health-only port, also when the data port needs a token."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from pathlib import Path

import grpc
import pytest
from deploy_helpers import make_data_root
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mcrave_client.proto import trainer_pb2, trainer_pb2_grpc

from services.trainer.backend import RunStatus
from services.trainer.server import TrainerConfig, start_trainer

Code = grpc.StatusCode
_FULL = "mcrave.v1.TrainerService"


def setup_root(tmp: Path) -> Path:
    root = make_data_root(tmp)
    (tmp / "models").mkdir()
    (tmp / "secret").mkdir()
    (tmp / "secret" / "manifest.json").write_text('{"channels": 2}')
    os.symlink(tmp / "secret", root / "link-out")
    (root / "empty").mkdir()
    return root


BAD_SPECS = [
    (dict(dataset="../secret"), Code.INVALID_ARGUMENT, "outside the data root"),
    (dict(dataset="link-out"), Code.INVALID_ARGUMENT, "outside the data root"),
    (dict(dataset="/etc"), Code.INVALID_ARGUMENT, "relative to the data root"),
    (dict(dataset=""), Code.INVALID_ARGUMENT, "dataset is empty"),
    (dict(dataset="empty"), Code.INVALID_ARGUMENT, "no manifest.json"),
    (dict(dataset="ds", config="huge"), Code.INVALID_ARGUMENT, "unknown config"),
    (dict(dataset="ds", projection="pca"), Code.INVALID_ARGUMENT, "unknown projection"),
    (dict(dataset="ds", channels=5), Code.INVALID_ARGUMENT, "has 2"),
    (dict(dataset="ds", backend="slurm"), Code.INVALID_ARGUMENT, "not available"),
    (dict(dataset="ds", overrides=["steps=3"]), Code.INVALID_ARGUMENT, "model.KEY=VALUE"),
    (dict(dataset="ds", model_name="../x"), Code.INVALID_ARGUMENT, "model_name"),
    # checked against the config schema: before, anything shaped like section.key=value passed
    (dict(dataset="ds", overrides=["train.nope=1"]), Code.INVALID_ARGUMENT, "train.nope"),
    (dict(dataset="ds", overrides=["train.lr=fast"]), Code.INVALID_ARGUMENT, "train.lr"),
    (dict(dataset="ds", overrides=["model.bands=3"]), Code.INVALID_ARGUMENT, "powers of two"),
    # bounded resources: before, any size was launched
    (dict(dataset="ds", resources=dict(nproc_per_node=64)), Code.INVALID_ARGUMENT, "limit of 8"),
    (dict(dataset="ds", resources=dict(nnodes=2)), Code.INVALID_ARGUMENT, "local backend"),
    (dict(dataset="ds", resources=dict(gpus_per_node=9)), Code.INVALID_ARGUMENT, "limit of 8"),
    (dict(dataset="ds", resources=dict(cpu="lots")), Code.INVALID_ARGUMENT, "quantity"),
    (dict(dataset="ds", resources=dict(cpu="65")), Code.INVALID_ARGUMENT, "cpu <= 64"),
    (dict(dataset="ds", resources=dict(memory="1Ti")), Code.INVALID_ARGUMENT, "memory <= 256"),
]


def plant_version(folder: Path) -> None:
    """A version folder that passes its sha256 check (FetchModel would send it)."""
    folder.mkdir(parents=True)
    (folder / "model.ckpt").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    (folder / "manifest.json").write_text(json.dumps({"sha256": {"model.ckpt": digest}}))


async def _exercise(tmp: Path) -> None:
    root = setup_root(tmp)
    token = tmp / "token"
    token.write_text("s3cret\n")
    cfg = TrainerConfig(
        jobs_dir=tmp / "jobs", data_root=root, models=tmp / "models",
        token_file=str(token), health_port=0,
    )  # fmt: skip
    running = await start_trainer(cfg)
    auth = (("authorization", "Bearer s3cret"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)

            async def status(call, request, metadata=auth) -> tuple[Code, str]:
                try:
                    reply = call(request, metadata=metadata)
                    if hasattr(reply, "__aiter__"):
                        async for _ in reply:
                            pass
                    else:
                        await reply
                except grpc.aio.AioRpcError as err:
                    return err.code(), err.details()
                return Code.OK, ""

            for fields, code, words in BAD_SPECS:
                request = trainer_pb2.SubmitJobRequest(spec=trainer_pb2.JobSpec(**fields))
                got = await status(stub.SubmitJob, request)
                assert got[0] == code and words in got[1], (fields, got)
            bad_id = trainer_pb2.SubmitJobRequest(
                spec=trainer_pb2.JobSpec(dataset="ds"), job_id="A!"
            )
            assert (await status(stub.SubmitJob, bad_id))[0] == Code.INVALID_ARGUMENT
            running.manager.max_active = 0  # a full trainer refuses valid jobs, launching none
            full = trainer_pb2.SubmitJobRequest(spec=trainer_pb2.JobSpec(dataset="ds"))
            got = await status(stub.SubmitJob, full)
            assert got[0] == Code.RESOURCE_EXHAUSTED and "limit 0" in got[1], got
            assert not list((tmp / "jobs").glob("runs/*")), "a refused job was launched"
            listed = await stub.ListJobs(trainer_pb2.ListJobsRequest(), metadata=auth)
            assert not listed.jobs

            unknown = [
                (stub.GetJob, trainer_pb2.GetJobRequest(job_id="nope")),
                (stub.CancelJob, trainer_pb2.CancelJobRequest(job_id="nope")),
                (stub.ResumeJob, trainer_pb2.ResumeJobRequest(job_id="nope")),
                (stub.PublishModel, trainer_pb2.PublishModelRequest(job_id="nope")),
                (stub.WatchJob, trainer_pb2.WatchJobRequest(job_id="nope")),
                (stub.FetchModel, trainer_pb2.FetchModelRequest(name="nope")),
            ]
            for call, request in unknown:
                got = await status(call, request)
                assert got[0] == Code.NOT_FOUND and "nope" in got[1], got
            # the refused watch left nothing behind (before: an entry per unknown id)
            assert not running.manager._watchers

            # a real published version outside the registry: a broken name check would serve it
            plant_version(tmp / "escaped" / "1")
            for name in ("../escaped", "..", "a/b", ".hidden", "7"):
                request = trainer_pb2.FetchModelRequest(name=name)
                got = await status(stub.FetchModel, request)
                assert got[0] == Code.INVALID_ARGUMENT and "invalid model name" in got[1], got

            no_token = await status(stub.ListJobs, trainer_pb2.ListJobsRequest(), metadata=())
            assert no_token[0] == Code.UNAUTHENTICATED and "bearer token" in no_token[1]

        # probes: the health-only port answers without a token
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=_FULL))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:  # and serves nothing else
                await trainer_pb2_grpc.TrainerServiceStub(channel).ListJobs(
                    trainer_pb2.ListJobsRequest(), metadata=auth
                )
            assert err.value.code() == Code.UNIMPLEMENTED
    finally:
        await running.stop(0)


def test_bad_requests_get_exact_codes_and_health_port_serves_probes(tmp_path):
    asyncio.run(_exercise(tmp_path))


def test_serve_refuses_bad_trainer_and_pull_options_with_one_line(tmp_path):
    import subprocess
    import sys

    serve = [sys.executable, "-m", "mcrave.cli.main", "serve"]
    trainer = [
        "trainer",
        "--port",
        "0",
        "--jobs-dir",
        str(tmp_path / "j"),
        "--models",
        str(tmp_path),
    ]
    cases = [
        ([*trainer, "--data-root", str(tmp_path / "missing")], "--data-root folder does not exist"),
        ([*trainer, "--data-root", str(tmp_path), "--token-file", str(tmp_path / "no")], "token"),
        (["decoder", "--models", str(tmp_path), "--pull-from", "nocolon"], "HOST:PORT"),
        # fails before this change: the trainer listened on every interface for anyone
        ([*trainer, "--data-root", str(tmp_path), "--host", "0.0.0.0"], "--insecure allows it"),
    ]
    for args, words in cases:
        proc = subprocess.run([*serve, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_trainer_off_loopback_only_with_auth_or_insecure(tmp_path):
    """Off loopback with neither a token nor mTLS the trainer refuses to start (see the CLI case
    above); `--insecure` is the explicit way to run it open anyway."""
    from services.common.auth import ConfigError

    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    cfg = dict(jobs_dir=tmp_path / "jobs", data_root=tmp_path / "data", models=tmp_path / "models")

    async def run() -> None:
        with pytest.raises(ConfigError, match="off loopback"):
            await start_trainer(TrainerConfig(**cfg, host="0.0.0.0"))
        running = await start_trainer(TrainerConfig(**cfg, host="0.0.0.0", insecure=True))
        await running.stop(0)

    asyncio.run(run())


class FakeBackend:
    """Starts nothing; every job stays RUNNING (capacity is what is tested)."""

    name, metrics_port = "fake", 0

    def start(self, record, train_args) -> dict:
        return {"pid": 0}

    def status(self, record) -> RunStatus:
        return RunStatus(running=True)

    def stop(self, record) -> None: ...
    def kill(self, record) -> None: ...
    def cleanup(self, record) -> None: ...

    def log_tail(self, record, lines) -> list[str]:
        return []


def test_capacity_holds_under_concurrent_submits(tmp_path, monkeypatch):
    """Five submits at once against --max-active 2: exactly two are admitted. Their validations
    (in threads) are released together, so all five reach the capacity check at once."""
    from services.trainer import jobs

    together, validate = threading.Barrier(5), jobs.validate_spec

    def validate_together(*args):
        together.wait(10)
        return validate(*args)

    monkeypatch.setattr(jobs, "validate_spec", validate_together)
    root = make_data_root(tmp_path)
    (tmp_path / "models").mkdir()
    cfg = TrainerConfig(
        jobs_dir=tmp_path / "jobs", data_root=root, models=tmp_path / "models",
        backend="fake", extra_backends={"fake": FakeBackend()}, max_active=2,
    )  # fmt: skip

    async def run() -> None:
        running = await start_trainer(cfg)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = trainer_pb2_grpc.TrainerServiceStub(channel)
                request = trainer_pb2.SubmitJobRequest(spec=trainer_pb2.JobSpec(dataset="ds"))
                calls = [stub.SubmitJob(request) for _ in range(5)]
                results = await asyncio.gather(*calls, return_exceptions=True)
            refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            assert len(results) - len(refused) == 2, results
            assert {r.code() for r in refused} == {Code.RESOURCE_EXHAUSTED}
            assert len(running.manager.store.list(("PENDING", "RUNNING"), limit=100)) == 2
        finally:
            await running.stop(0)

    asyncio.run(run())
