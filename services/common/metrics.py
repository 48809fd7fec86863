"""Every Prometheus metric of a service, declared once, in base units
(Prometheus naming: prometheus.io/docs/practices/naming).

Each server owns a `ServiceMetrics` with its own `CollectorRegistry` (so several servers can live
in one test process) served on its own HTTP port. Labels are bounded: model name, method, status
code, payload kind - never stream ids.
"""

from __future__ import annotations

from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PREFIX = "mcrave"
# chunk-scale buckets: 0.25 ms .. 1 s (the client default 5 ms - 10 s is too coarse)
CHUNK_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.043, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics(Protocol):
    """What the shared server bootstrap needs of any service's metrics (encoder, decoder,
    trainer): the registry it serves on /metrics and the error counter its interceptors feed."""

    registry: CollectorRegistry
    errors: Counter


class ServiceMetrics:
    """The metric families of one encoder or decoder server."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.audio_in = Counter(
            f"{PREFIX}_audio_in_seconds",
            "Audio seconds received (latents count as the audio they stand for)",
            ["model"],
            registry=r,
        )
        self.audio_out = Counter(
            f"{PREFIX}_audio_out_seconds",
            "Audio seconds sent (latents count as the audio they stand for)",
            ["model"],
            registry=r,
        )
        self.chunks_in = Counter(
            f"{PREFIX}_chunks_received", "Chunks received", ["model"], registry=r
        )
        self.chunks_out = Counter(f"{PREFIX}_chunks_sent", "Chunks sent", ["model"], registry=r)
        self.bytes_in = Counter(
            f"{PREFIX}_received_bytes",
            "Payload bytes received, by kind (pcm or latent)",
            ["model", "kind"],
            registry=r,
        )
        self.bytes_out = Counter(
            f"{PREFIX}_sent_bytes",
            "Payload bytes sent, by kind (pcm or latent)",
            ["model", "kind"],
            registry=r,
        )
        self.active_streams = Gauge(
            f"{PREFIX}_active_streams", "Open streams", ["model"], registry=r
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Streams joined into one forward",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time a chunk waited for its batch to start",
            ["model"],
            buckets=CHUNK_BUCKETS,
            registry=r,
        )
        self.chunk_latency = Histogram(
            f"{PREFIX}_chunk_latency_seconds",
            "Chunk received -> reply ready (queue + compute)",
            ["model"],
            buckets=CHUNK_BUCKETS,
            registry=r,
        )
        self.compute = Counter(
            f"{PREFIX}_compute_seconds",
            "Wall seconds spent in model forwards",
            ["model"],
            registry=r,
        )
        self.speed = Gauge(
            f"{PREFIX}_processing_speed",
            "Audio seconds per compute wall second of the last batch (x real time)",
            ["model"],
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Requests ended with an error, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "1 for each model version this server has loaded",
            ["model", "version", "fingerprint"],
            registry=r,
        )
        self.corrupt_versions = Counter(
            f"{PREFIX}_registry_corrupt_versions",
            "Registry versions skipped as corrupt",
            ["model"],
            registry=r,
        )
        Gauge(f"{PREFIX}_build_info", "Which service this is", ["service"], registry=r).labels(
            service
        ).set(1)


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> tuple[WSGIServer, int]:
    """Start the /metrics HTTP(S) server in a thread; returns (server, bound port), port 0 picks a
    free one. HTTPS with `tls_cert` + `tls_key` (files checked by the caller)."""
    httpd, _thread = start_http_server(
        port, addr=host, registry=registry, certfile=tls_cert, keyfile=tls_key
    )
    return httpd, httpd.server_address[1]
