"""Command-line options every server shares (`mcrave serve encoder|decoder|trainer`), declared
once so the services cannot drift apart; `endpoint_options` turns them into `Endpoint` fields."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from services.common.limits import Limits

_LIMIT_FIELDS = {f.name for f in dataclasses.fields(Limits)}


def _seconds_from_ms(text: str) -> float:
    return float(text) / 1000


def add_endpoint_options(
    p: argparse.ArgumentParser, *, port: int | None, metrics_port: int | None, ports_help: str
) -> None:
    """Transport, auth, metrics, reflection and call limits (`ports_help`: the default ports)."""
    p.add_argument("--host", default="127.0.0.1", help="address gRPC binds (default loopback)")
    p.add_argument("--port", type=int, default=port, help=f"gRPC port (0 = any free; {ports_help})")
    p.add_argument("--tls-cert", help="server certificate (PEM); enables TLS")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--tls-ca", help="CA (PEM) that client certificates must chain to: enables mTLS")
    p.add_argument("--token-file", help="file holding the bearer token clients must send")
    m = p.add_argument_group("metrics (/metrics has no token: loopback unless exposed on purpose)")
    m.add_argument("--metrics-host", default="127.0.0.1", help="address /metrics binds")
    m.add_argument("--metrics-port", type=int, default=metrics_port, help="0 = any free")
    m.add_argument("--no-metrics", action="store_true", help="serve no /metrics endpoint")
    m.add_argument("--metrics-tls-cert", help="certificate (PEM): serve /metrics over HTTPS")
    m.add_argument("--metrics-tls-key", help="private key (PEM) of --metrics-tls-cert")
    p.add_argument("--no-reflection", action="store_true", help="do not serve gRPC reflection")
    p.add_argument(
        "--max-rpcs", type=int, default=Limits.max_rpcs, help="calls at once, streams included"
    )


def add_stream_options(p: argparse.ArgumentParser) -> None:
    """Limits of the encoder's and decoder's audio streams."""
    d = Limits()
    p.add_argument("--max-streams", type=int, default=d.max_streams, help="concurrent streams")
    p.add_argument(
        "--max-streams-per-peer",
        type=int,
        default=d.max_streams_per_peer,
        help="concurrent streams of one client address",
    )
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="streams per forward")
    p.add_argument(
        "--max-wait-ms",
        dest="max_wait_s",
        type=_seconds_from_ms,
        default=d.max_wait_s,
        help=f"batching wait per chunk (default {d.max_wait_s * 1000:g})",
    )
    p.add_argument(
        "--first-chunk-timeout",
        dest="first_chunk_timeout_s",
        type=float,
        default=d.first_chunk_timeout_s,
        help=f"seconds from opening a stream to its first chunk (default {d.first_chunk_timeout_s:g})",
    )
    p.add_argument(
        "--idle-timeout",
        dest="idle_timeout_s",
        type=float,
        default=d.idle_timeout_s,
        help=f"seconds a stream may send no chunk (default {d.idle_timeout_s:g})",
    )


def endpoint_options(args: argparse.Namespace) -> dict[str, Any]:
    """`Endpoint` fields from parsed options (ValueError for limits that cannot work)."""
    limits = Limits(**{k: v for k, v in vars(args).items() if k in _LIMIT_FIELDS})
    return dict(
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        token_file=args.token_file,
        metrics_host=args.metrics_host,
        metrics_port=None if args.no_metrics else args.metrics_port,
        metrics_tls_cert=args.metrics_tls_cert,
        metrics_tls_key=args.metrics_tls_key,
        reflection=not args.no_reflection,
        limits=limits,
    )
