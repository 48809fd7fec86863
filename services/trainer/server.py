"""Trainer server bootstrap: job store + manager + backends, the gRPC server (built by the same
`services.common.server.build_server` as the encoder and decoder: TLS/token, limits, health,
reflection, metrics), an optional plaintext health-only port for Kubernetes gRPC probes (they
cannot speak TLS), and the Prometheus file_sd list of running jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc
from mcrave_client.connection import is_loopback_host
from mcrave_client.proto import trainer_pb2_grpc

from services.common.auth import ConfigError
from services.common.server import (
    Endpoint,
    GrpcServer,
    build_server,
    grpc_address,
    wait_for_stop_signal,
    write_ready_file,
)
from services.trainer.backend import Backend
from services.trainer.jobs import JobLimits, JobManager, Paths
from services.trainer.local_backend import LocalBackend
from services.trainer.metrics import TrainerMetrics, write_sd_file
from services.trainer.servicer import FULL_NAME, TrainerServicer
from services.trainer.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig(Endpoint):
    jobs_dir: Path
    data_root: Path
    models: Path
    runs_dir: Path | None = None  # default: JOBS_DIR/runs
    backend: str = "local"
    health_port: int | None = None
    sd_file: Path | None = None
    sd_host: str = "127.0.0.1"  # how Prometheus reaches local jobs' metrics ports
    threads: int | None = None  # torch threads per local job
    cancel_grace_s: float = 120.0
    max_active: int = 4
    job_limits: JobLimits = JobLimits()
    insecure: bool = False  # allow listening off loopback without a token or mTLS
    poll_s: float = 0.5
    extra_backends: dict[str, Backend] = field(default_factory=dict)  # e.g. kubernetes


@dataclass
class RunningTrainer:
    grpc: GrpcServer
    health_server: grpc.aio.Server | None
    manager: JobManager
    health_port: int | None

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def metrics_port(self) -> int | None:
        return self.grpc.metrics_port

    async def stop(self, grace_s: float) -> None:
        """Jobs keep running (a restarted trainer re-attaches); only the service stops."""
        await self.grpc.stop(grace_s)
        if self.health_server:
            await self.health_server.stop(0)
        await self.manager.close()
        self.manager.store.close()


def _check_dirs(cfg: TrainerConfig) -> None:
    for what, path in (("--data-root", cfg.data_root), ("--models", cfg.models)):
        if not path.is_dir():
            raise ConfigError(f"{path}: {what} folder does not exist")


def _check_exposure(cfg: TrainerConfig) -> None:
    """Whoever reaches the trainer runs code (training jobs) on its machine: off loopback it must
    know who calls, by a bearer token (TLS is then enforced) or client certificates (mTLS)."""
    if cfg.insecure or is_loopback_host(cfg.host) or cfg.token_file or cfg.tls_ca:
        return
    raise ConfigError(
        f"--host {cfg.host}: off loopback the trainer needs --token-file (with TLS) or "
        "--tls-ca (mTLS): anyone who reaches it can start jobs; --insecure allows it anyway"
    )


async def start_trainer(cfg: TrainerConfig) -> RunningTrainer:
    _check_dirs(cfg)
    _check_exposure(cfg)
    backends: dict[str, Backend] = {"local": LocalBackend(cfg.threads), **cfg.extra_backends}
    if cfg.backend not in backends:
        raise ConfigError(f"--backend {cfg.backend}: not available ({sorted(backends)})")

    metrics = TrainerMetrics()
    store = JobStore(cfg.jobs_dir)

    def refresh(manager: JobManager) -> None:
        metrics.set_counts(manager.store.counts())
        if cfg.sd_file is not None:
            running = manager.store.list(("RUNNING", "CANCELLING"), limit=10_000)
            ports = [r.handle.get("metrics_port") for r in running if r.backend == "local"]
            write_sd_file(cfg.sd_file, [f"{cfg.sd_host}:{p}" for p in ports if p])

    manager = JobManager(
        store,
        backends,
        cfg.backend,
        Paths(cfg.data_root, cfg.runs_dir or cfg.jobs_dir / "runs", cfg.models),
        poll_s=cfg.poll_s,
        cancel_grace_s=cfg.cancel_grace_s,
        max_active=cfg.max_active,
        job_limits=cfg.job_limits,
        on_change=refresh,
        on_steps=metrics.steps.inc,
    )
    register = lambda server: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(  # noqa: E731
        TrainerServicer(manager, cfg.models), server
    )
    try:
        built = build_server(cfg, [FULL_NAME], register, metrics)
    except ConfigError:
        store.close()
        raise
    await manager.start()
    refresh(manager)
    health_server, health_port = None, None
    if cfg.health_port is not None:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(built.health, health_server)
        health_port = health_server.add_insecure_port(grpc_address(cfg.host, cfg.health_port))
        await health_server.start()
    await built.start()
    await built.set_serving(True)
    return RunningTrainer(built, health_server, manager, health_port)


async def serve(cfg: TrainerConfig, grace_s: float = 5.0, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT."""
    running = await start_trainer(cfg)
    print(
        f"{running.grpc.describe('trainer')}, jobs {cfg.jobs_dir}, backend {cfg.backend}",
        flush=True,
    )
    if ready_file is not None:
        info = running.grpc.ready_info("trainer")
        write_ready_file(ready_file, {**info, "health_port": running.health_port})
    await wait_for_stop_signal()
    await running.stop(grace_s)
