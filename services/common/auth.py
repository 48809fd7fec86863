"""Transport security (TLS / mTLS) and bearer-token auth for the services.

mTLS failures never reach our code: gRPC ends the handshake and the client sees UNAVAILABLE.
The token is checked by an interceptor on every call except health checks (Kubernetes probes
carry no headers), and refused with UNAUTHENTICATED by a handler of the same RPC kind.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from mcrave_client.connection import is_loopback_host

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class ConfigError(ValueError):
    """A server option that cannot work (the CLI prints it as one line and exits 2)."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}") from e


def server_credentials(
    cert: str | None, key: str | None, ca: str | None
) -> grpc.ServerCredentials | None:
    """TLS when cert+key are given; with a CA, clients must present a certificate it signed."""
    if not cert and not key:
        if ca:
            raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
        return None
    if not (cert and key):
        raise ConfigError("--tls-cert and --tls-key go together")
    pair = (_read(key, "TLS key"), _read(cert, "TLS certificate"))
    root = _read(ca, "TLS CA") if ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=bool(ca))


def check_metrics_tls(cert: str | None, key: str | None) -> None:
    """The /metrics HTTPS pair: both or neither, both readable (the HTTP server loads them)."""
    if bool(cert) != bool(key):
        raise ConfigError("--metrics-tls-cert and --metrics-tls-key go together")
    if cert and key:
        _read(cert, "metrics TLS certificate")
        _read(key, "metrics TLS key")


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    token = _read(path, "token").decode("utf-8", "replace").strip()
    if not token:
        raise ConfigError(f"{path}: token file is empty")
    return token


def check_token_transport(token: str | None, tls: bool, host: str) -> None:
    """A bearer token sent in clear text can be sniffed: allow that only on loopback."""
    if token and not tls and not is_loopback_host(host):
        raise ConfigError(
            f"--token-file without TLS is allowed only on loopback (host {host}): add --tls-cert/--tls-key"
        )


def _abort_handler(kind: str, message: str) -> grpc.RpcMethodHandler:
    async def abort_unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(requests: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    make = {
        "unary_unary": lambda: grpc.unary_unary_rpc_method_handler(abort_unary),
        "unary_stream": lambda: grpc.unary_stream_rpc_method_handler(abort_unary),
        "stream_unary": lambda: grpc.stream_unary_rpc_method_handler(abort_stream),
        "stream_stream": lambda: grpc.stream_stream_rpc_method_handler(abort_stream),
    }
    return make[kind]()


def handler_kind(handler: grpc.RpcMethodHandler) -> str:
    streams = (
        "stream" if handler.request_streaming else "unary",
        "stream" if handler.response_streaming else "unary",
    )
    return "_".join(streams)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every non-health call."""

    def __init__(self, token: str, on_reject: Callable[[str], None] | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        if hmac.compare_digest(sent_bytes, self._expected):
            return handler
        if self._on_reject:
            self._on_reject(details.method)
        why = "missing bearer token" if not sent else "bad bearer token"
        return _abort_handler(
            handler_kind(handler), f"{why} (send metadata authorization: Bearer <token>)"
        )
