"""Trainer server bootstrap: job store + manager + backends, the gRPC server (same TLS/token
options as the encoder and decoder), an optional plaintext health-only port for Kubernetes gRPC
probes (they cannot speak TLS), metrics, and the Prometheus file_sd list of running jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from mcrave_client.connection import is_loopback_host
from mcrave_client.proto import trainer_pb2_grpc

from services.common.auth import ConfigError, TokenInterceptor
from services.common.error_mapping import ErrorMappingInterceptor
from services.common.server import (
    add_health_and_reflection,
    bind_port,
    grpc_address,
    transport,
    wait_for_stop_signal,
    write_ready_file,
)
from services.trainer.backend import Backend
from services.trainer.jobs import JobManager, Paths
from services.trainer.local_backend import LocalBackend
from services.trainer.metrics import TrainerMetrics, write_sd_file
from services.trainer.servicer import FULL_NAME, TrainerServicer
from services.trainer.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    jobs_dir: Path
    data_root: Path
    models: Path
    runs_dir: Path | None = None  # default: JOBS_DIR/runs
    backend: str = "local"
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    health_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    token_file: str | None = None
    sd_file: Path | None = None
    sd_host: str = "127.0.0.1"  # how Prometheus reaches local jobs' metrics ports
    threads: int | None = None  # torch threads per local job
    cancel_grace_s: float = 120.0
    max_active: int = 4
    insecure: bool = False  # allow listening off loopback without a token or mTLS
    poll_s: float = 0.5
    extra_backends: dict[str, Backend] = field(default_factory=dict)  # e.g. kubernetes


@dataclass
class RunningTrainer:
    server: grpc.aio.Server
    health_server: grpc.aio.Server | None
    health: health.aio.HealthServicer
    manager: JobManager
    port: int
    metrics_port: int
    health_port: int | None
    _httpd: object

    async def stop(self, grace_s: float) -> None:
        """Jobs keep running (a restarted trainer re-attaches); only the service stops."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.health_server:
            await self.health_server.stop(0)
        await self.manager.close()
        self.manager.store.close()
        self._httpd.shutdown()
        self._httpd.server_close()


def _check_dirs(cfg: TrainerConfig) -> None:
    for what, path in (("--data-root", cfg.data_root), ("--models", cfg.models)):
        if not path.is_dir():
            raise ConfigError(f"{path}: {what} folder does not exist")


def _check_exposure(cfg: TrainerConfig, token: str | None) -> None:
    """Whoever reaches the trainer runs code (training jobs) on its machine: off loopback it must
    know who calls, by a bearer token (TLS is then enforced) or client certificates (mTLS)."""
    if cfg.insecure or is_loopback_host(cfg.host) or token or cfg.tls_ca:
        return
    raise ConfigError(
        f"--host {cfg.host}: off loopback the trainer needs --token-file (with TLS) or "
        "--tls-ca (mTLS): anyone who reaches it can start jobs; --insecure allows it anyway"
    )


async def start_trainer(cfg: TrainerConfig) -> RunningTrainer:
    _check_dirs(cfg)
    creds, token = transport(cfg.tls_cert, cfg.tls_key, cfg.tls_ca, cfg.token_file, cfg.host)
    _check_exposure(cfg, token)
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
        on_change=refresh,
        on_steps=metrics.steps.inc,
    )
    await manager.start()
    refresh(manager)

    interceptors: list[grpc.aio.ServerInterceptor] = []
    if token:
        interceptors.append(TokenInterceptor(token))
    interceptors.append(ErrorMappingInterceptor(metrics))
    server = grpc.aio.server(interceptors=interceptors)
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(
        TrainerServicer(manager, cfg.models), server
    )
    health_servicer = add_health_and_reflection(server, [FULL_NAME])
    port = bind_port(server, cfg.host, cfg.port, creds)
    health_server, health_port = None, None
    if cfg.health_port is not None:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(grpc_address(cfg.host, cfg.health_port))
        await health_server.start()
    httpd, metrics_port = metrics.serve_http(cfg.host, cfg.metrics_port)
    await server.start()
    for name in ("", FULL_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningTrainer(
        server, health_server, health_servicer, manager, port, metrics_port, health_port, httpd
    )


async def serve(cfg: TrainerConfig, grace_s: float = 5.0, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT."""
    running = await start_trainer(cfg)
    scheme = "grpcs" if cfg.tls_cert else "grpc"
    print(
        f"mcrave trainer ready: {scheme} {grpc_address(cfg.host, running.port)}, "
        f"metrics http://{grpc_address(cfg.host, running.metrics_port)}/metrics, "
        f"jobs {cfg.jobs_dir}, backend {cfg.backend}",
        flush=True,
    )
    if ready_file is not None:
        write_ready_file(
            ready_file,
            {
                "service": "trainer",
                "host": cfg.host,
                "port": running.port,
                "metrics_port": running.metrics_port,
                "health_port": running.health_port,
            },
        )
    await wait_for_stop_signal()
    await running.stop(grace_s)
