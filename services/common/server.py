"""Server bootstrap shared by the encoder and decoder: built, then run.

`start_server(cfg, service)` loads the registry, binds the gRPC port (TLS/mTLS, token, limits),
registers the service plus ModelService, health and reflection, starts the metrics HTTP port and
the registry watch, and returns a `RunningServer` with the bound ports (port 0 picks free ones).
`serve()` runs one until SIGTERM/SIGINT, then drains: health NOT_SERVING, new streams refused,
open streams get `grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from mcrave_client.proto import models_pb2, models_pb2_grpc

from mcrave.atomic import atomic_write_bytes
from services.common.auth import (
    ConfigError,
    TokenInterceptor,
    check_token_transport,
    read_token,
    server_credentials,
)
from services.common.error_mapping import ErrorMappingInterceptor
from services.common.limits import Limits
from services.common.metrics import ServiceMetrics
from services.common.model_service import ModelServicer
from services.common.registry_watch import RegistryWatcher
from services.common.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    models: Path
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    token_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    poll_interval_s: float = 2.0
    grace_s: float = 10.0
    reflection: bool = True


@dataclass(frozen=True)
class ServiceDef:
    """What one service adds to the shared bootstrap."""

    name: str  # "encoder" | "decoder"
    full_name: str  # e.g. "mcrave.v1.EncoderService" (health + reflection)
    register: Callable[[grpc.aio.Server, Runtime], None]


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_port(
    server: grpc.aio.Server, host: str, port: int, creds: grpc.ServerCredentials | None
) -> int:
    """Bind `host:port` (TLS when `creds`) and return the bound port; ConfigError says why not."""
    address = grpc_address(host, port)
    try:
        return (
            server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        )
    except RuntimeError as error:
        raise ConfigError(f"cannot bind gRPC port {address}: {error}") from error


def transport(
    tls_cert: str | None, tls_key: str | None, tls_ca: str | None, token_file: str | None, host: str
) -> tuple[grpc.ServerCredentials | None, str | None]:
    """Server credentials and bearer token from the CLI options, refusing a token sent in clear
    text off loopback (ConfigError)."""
    creds = server_credentials(tls_cert, tls_key, tls_ca)
    token = read_token(token_file)
    check_token_transport(token, creds is not None, host)
    return creds, token


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: list[str], reflect: bool = True
) -> health.aio.HealthServicer:
    """Register gRPC health (for probes) and, if asked, reflection (for grpcurl) on `server`."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if reflect:
        reflection.enable_server_reflection(
            [*service_names, reflection.SERVICE_NAME, health.SERVICE_NAME], server
        )
    return servicer


def write_ready_file(path: Path, ports: dict[str, object]) -> None:
    """Atomically tell a supervisor (or a test) the bound ports and our pid."""
    atomic_write_bytes(path, json.dumps({**ports, "pid": os.getpid()}).encode())


async def wait_for_stop_signal() -> None:
    """Return on the first SIGTERM or SIGINT (the drain follows in the caller)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@dataclass
class RunningServer:
    service: ServiceDef
    server: grpc.aio.Server
    runtime: Runtime
    health: health.aio.HealthServicer
    port: int
    metrics_port: int
    _httpd: object
    _watch: asyncio.Task

    @property
    def metrics(self) -> ServiceMetrics:
        return self.runtime.metrics

    async def stop(self, grace_s: float) -> None:
        """Drain: report NOT_SERVING, refuse new streams, give open ones `grace_s`, then stop."""
        await self.health.enter_graceful_shutdown()
        self.runtime.draining = True
        await self.server.stop(grace_s)
        self._watch.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self.runtime.close()


async def start_server(cfg: ServerConfig, service: ServiceDef) -> RunningServer:
    """Build and start a server; raises ConfigError for options that cannot work."""
    creds, token = transport(cfg.tls_cert, cfg.tls_key, cfg.tls_ca, cfg.token_file, cfg.host)
    metrics = ServiceMetrics(service.name)
    watcher = RegistryWatcher(
        cfg.models,
        on_loaded=lambda lv: metrics.model_info.labels(
            lv.name, str(lv.version), lv.fingerprint
        ).set(1),
        on_unloaded=lambda lv: metrics.model_info.remove(lv.name, str(lv.version), lv.fingerprint),
        on_corrupt=lambda name, version, why: metrics.corrupt_versions.labels(name).inc(),
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, watcher.poll)
    if not watcher.models():
        log.warning("no loadable model in %s yet (watching it)", cfg.models)
    runtime = Runtime(watcher, cfg.limits, metrics)

    interceptors: list[grpc.aio.ServerInterceptor] = []
    if token:
        interceptors.append(
            TokenInterceptor(
                token,
                lambda method: metrics.errors.labels(
                    method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED.name
                ).inc(),
            )
        )
    interceptors.append(ErrorMappingInterceptor(metrics))
    size = cfg.limits.max_message_bytes
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            # long audio streams: let clients ping every 30 s without being told to calm down
            ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    service.register(server, runtime)
    models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(watcher, cfg.limits), server)
    names = [service.full_name, models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name]
    health_servicer = add_health_and_reflection(server, names, cfg.reflection)
    port = bind_port(server, cfg.host, cfg.port, creds)
    httpd, metrics_port = metrics.serve_http(cfg.host, cfg.metrics_port)
    await server.start()

    async def readiness() -> None:
        """Ready = some model loaded (health ignores this once draining has begun)."""
        serving = health_pb2.HealthCheckResponse.SERVING
        status = serving if watcher.models() else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *names):
            await health_servicer.set(name, status)

    await readiness()
    watch = loop.create_task(runtime.watch(cfg.poll_interval_s, readiness))
    return RunningServer(
        service, server, runtime, health_servicer, port, metrics_port, httpd, watch
    )


async def serve(cfg: ServerConfig, service: ServiceDef, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain within `cfg.grace_s`."""
    running = await start_server(cfg, service)
    models = (
        ", ".join(f"{n} v{max(v)}" for n, v in sorted(running.runtime.watcher.models().items()))
        or "none"
    )
    scheme = "grpcs" if cfg.tls_cert else "grpc"
    print(
        f"mcrave {service.name} ready: {scheme} {grpc_address(cfg.host, running.port)}, "
        f"metrics http://{grpc_address(cfg.host, running.metrics_port)}/metrics, models: {models}",
        flush=True,
    )
    if ready_file is not None:
        write_ready_file(
            ready_file,
            {
                "service": service.name,
                "host": cfg.host,
                "port": running.port,
                "metrics_port": running.metrics_port,
            },
        )
    await wait_for_stop_signal()
    log.info("draining (grace %.1f s, %d open streams)", cfg.grace_s, running.runtime.open_streams)
    await running.stop(cfg.grace_s)
