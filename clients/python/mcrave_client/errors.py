"""One exception type for everything the SDK reports, with a one-line, actionable message."""

from __future__ import annotations

import grpc

# hints for statuses whose gRPC message alone leaves a user guessing
_HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the service running and reachable?",
    grpc.StatusCode.UNAUTHENTICATED: "check --token-file",
}
_TLS_HINT = "or the TLS handshake failed: check --tls-ca/--tls-cert/--tls-key"


class ClientError(Exception):
    """A failed call or bad client-side input; `code` is the gRPC status when there was one."""

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # the server's stable `mcrave-reason`, when it sent one


def from_rpc_error(err: grpc.RpcError, service: str, target: str, secure: bool) -> ClientError:
    """Turn a gRPC error into a ClientError naming the service, status and what to check."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    details = " ".join(details.split())  # gRPC details can span lines; keep errors one line
    reason = _reason(err)
    hint = _HINTS.get(code)
    if code == grpc.StatusCode.UNAVAILABLE and secure:
        hint = f"{hint} {_TLS_HINT}"
    message = f"{service} at {target}: {code.name}: {details}"
    if hint:
        message += f" ({hint})"
    return ClientError(message, code=code, reason=reason)


def _reason(err: grpc.RpcError) -> str | None:
    try:
        trailing = err.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - not every RpcError (e.g. channel errors) carries metadata
        return None
    for key, value in trailing:
        if key == "mcrave-reason":
            return value if isinstance(value, str) else value.decode()
    return None
