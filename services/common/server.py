"""Server bootstrap shared by the encoder, decoder and trainer: one builder, then run.

`build_server` is the only place a gRPC server is made, so the three services cannot drift apart:
transport (TLS/mTLS, bearer token, a token in clear text refused off loopback), limits (message
sizes, keepalive and ping strikes, concurrent calls), interceptors (token, error mapping), health,
reflection (optional) and the /metrics endpoint (loopback unless told otherwise, optional HTTPS,
or none). `start_server(cfg, service)` adds what the encoder and decoder share (registry watch,
runtime, ModelService) and returns a `RunningServer` with the bound ports (port 0 picks free
ones). `serve()` runs one until SIGTERM/SIGINT, then drains: health NOT_SERVING, new streams
refused, open streams get `grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from mcrave_client.connection import Connection
from mcrave_client.proto import models_pb2, models_pb2_grpc

from mcrave.atomic import atomic_write_bytes
from mcrave.config import DEFAULT_RUNTIME
from services.common.auth import (
    ConfigError,
    TokenInterceptor,
    check_metrics_tls,
    check_token_transport,
    read_token,
    server_credentials,
)
from services.common.error_mapping import ErrorMappingInterceptor
from services.common.limits import Limits
from services.common.metrics import ServerMetrics, ServiceMetrics, serve_metrics
from services.common.model_service import ModelServicer
from services.common.oip import reflection_pool
from services.common.registry_watch import RegistryWatcher, load_version
from services.common.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where a server listens and who may call it: the options every service shares."""

    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    token_file: str | None = None
    # /metrics is not covered by TLS or the token: loopback unless deliberately exposed
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 0  # None: no metrics endpoint
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    reflection: bool = True
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class ServerConfig(Endpoint):
    models: Path
    poll_interval_s: float = 2.0
    grace_s: float = 10.0
    runtime: str = DEFAULT_RUNTIME  # the streaming engine's (mcrave/runtime.py)
    relay_to: tuple[Connection, ...] = ()  # encoder: the decoders it may relay streams to
    advertise: str = ""  # decoder: HOST:PORT encoders reach this process at (behind a balancer)


Closer = Callable[[], Awaitable[None]]  # releases what a service holds beyond its servicers


@dataclass(frozen=True)
class ServiceDef:
    """What one service adds to the shared bootstrap."""

    name: str  # "encoder" | "decoder"
    full_name: str  # e.g. "mcrave.v1.EncoderService" (health + reflection)
    # adds the servicers; returns what to release once the server has stopped, if anything
    register: Callable[[grpc.aio.Server, Runtime, ServerConfig], Closer | None]
    also_serves: tuple[str, ...] = ()  # other services `register` adds (health + reflection)


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
class GrpcServer:
    """A built (bound, not yet serving) gRPC server with its health servicer and /metrics."""

    endpoint: Endpoint
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    names: list[str]  # the services it serves (health statuses, reflection)
    metrics: ServerMetrics
    port: int
    metrics_port: int | None = None
    _httpd: WSGIServer | None = None

    async def start(self) -> None:
        """Serve /metrics (unless turned off), then gRPC."""
        ep = self.endpoint
        if ep.metrics_port is not None:
            self._httpd, self.metrics_port = serve_metrics(
                self.metrics.registry,
                ep.metrics_host,
                ep.metrics_port,
                ep.metrics_tls_cert,
                ep.metrics_tls_key,
            )
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        """Health of the server and of each of its services (ignored once draining)."""
        status = health_pb2.HealthCheckResponse
        for name in ("", *self.names):
            await self.health.set(name, status.SERVING if serving else status.NOT_SERVING)

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, let open calls finish within `grace_s`, stop serving /metrics."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def describe(self, service: str) -> str:
        """The one line a server prints once it serves."""
        ep = self.endpoint
        scheme = "grpcs" if ep.tls_cert else "grpc"
        metrics = "metrics off"
        if self.metrics_port is not None:
            web = "https" if ep.metrics_tls_cert else "http"
            metrics = f"metrics {web}://{grpc_address(ep.metrics_host, self.metrics_port)}/metrics"
        return f"mcrave {service} ready: {scheme} {grpc_address(ep.host, self.port)}, {metrics}"

    def ready_info(self, service: str) -> dict[str, object]:
        """The bound ports, for the --ready-file."""
        return {
            "service": service,
            "host": self.endpoint.host,
            "port": self.port,
            "metrics_port": self.metrics_port,
        }


def build_server(
    endpoint: Endpoint,
    names: list[str],
    register: Callable[[grpc.aio.Server], None],
    metrics: ServerMetrics,
) -> GrpcServer:
    """Make, configure and bind the gRPC server of a service whose servicers `register` adds and
    whose service `names` health and reflection report; raises ConfigError for options that
    cannot work. Nothing is served until `GrpcServer.start()`."""
    ep = endpoint
    creds = server_credentials(ep.tls_cert, ep.tls_key, ep.tls_ca)
    token = read_token(ep.token_file)
    check_token_transport(token, creds is not None, ep.host)
    check_metrics_tls(ep.metrics_tls_cert, ep.metrics_tls_key)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if token:
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED.name
        interceptors.append(
            TokenInterceptor(
                token,
                lambda method: metrics.errors.labels(
                    method.rsplit("/", 1)[-1], unauthenticated
                ).inc(),
            )
        )
    interceptors.append(ErrorMappingInterceptor(metrics))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=ep.limits.grpc_options(),
        maximum_concurrent_rpcs=ep.limits.max_rpcs,
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if ep.reflection:
        reflected = [*names, reflection.SERVICE_NAME, health.SERVICE_NAME]
        reflection.enable_server_reflection(reflected, server, pool=reflection_pool(reflected))
    port = bind_port(server, ep.host, ep.port, creds)
    return GrpcServer(ep, server, health_servicer, names, metrics, port)


@dataclass
class RunningServer:
    service: ServiceDef
    grpc: GrpcServer
    runtime: Runtime
    _watch: asyncio.Task
    _closers: list[Closer]

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def metrics_port(self) -> int | None:
        return self.grpc.metrics_port

    @property
    def metrics(self) -> ServiceMetrics:
        return self.runtime.metrics

    async def stop(self, grace_s: float) -> None:
        """Drain: refuse new streams, report NOT_SERVING, give open ones `grace_s`, then stop."""
        self.runtime.draining = True
        await self.grpc.stop(grace_s)
        self._watch.cancel()
        self.runtime.close()
        for close in self._closers:
            await close()


async def start_server(cfg: ServerConfig, service: ServiceDef) -> RunningServer:
    """Build and start an encoder or decoder server; raises ConfigError for options that cannot
    work (checked before any model is loaded)."""
    metrics = ServiceMetrics(service.name)
    watcher = RegistryWatcher(
        cfg.models,
        load=functools.partial(load_version, runtime=cfg.runtime),
        on_loaded=lambda lv: metrics.model_info.labels(
            lv.name, str(lv.version), lv.fingerprint
        ).set(1),
        on_unloaded=lambda lv: metrics.model_info.remove(lv.name, str(lv.version), lv.fingerprint),
        on_corrupt=lambda name, version, why: metrics.corrupt_versions.labels(name).inc(),
    )
    runtime = Runtime(watcher, cfg.limits, metrics)
    closers: list[Closer] = []

    def register(server: grpc.aio.Server) -> None:
        closer = service.register(server, runtime, cfg)
        if closer is not None:
            closers.append(closer)
        models_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(watcher, cfg.limits), server
        )

    names = [
        service.full_name,
        *service.also_serves,
        models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    ]
    built = build_server(cfg, names, register, metrics)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, watcher.poll)
    if not watcher.models():
        log.warning("no loadable model in %s yet (watching it)", cfg.models)
    await built.start()

    async def readiness() -> None:
        """Ready = some model loaded (health ignores this once draining has begun)."""
        await built.set_serving(bool(watcher.models()))

    await readiness()
    watch = loop.create_task(runtime.watch(cfg.poll_interval_s, readiness))
    return RunningServer(service, built, runtime, watch, closers)


async def serve(cfg: ServerConfig, service: ServiceDef, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain within `cfg.grace_s`."""
    running = await start_server(cfg, service)
    models = (
        ", ".join(f"{n} v{max(v)}" for n, v in sorted(running.runtime.watcher.models().items()))
        or "none"
    )
    print(f"{running.grpc.describe(service.name)}, models: {models}", flush=True)
    if ready_file is not None:
        write_ready_file(ready_file, running.grpc.ready_info(service.name))
    await wait_for_stop_signal()
    log.info("draining (grace %.1f s, %d open streams)", cfg.grace_s, running.runtime.open_streams)
    await running.stop(cfg.grace_s)
