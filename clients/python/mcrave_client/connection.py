"""How to reach a service: target, TLS/mTLS files, bearer token, and the gRPC channel options.

The token rides in `authorization: Bearer ...` call metadata rather than call credentials so it
works on loopback plaintext too; sending it in clear to any other host is refused here, as the
servers refuse to accept it (services/common/auth.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from mcrave_client.errors import ClientError

# Latent and audio chunks for N up to 299 channels exceed gRPC's 4 MiB default receive limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class Connection:
    """A service address plus its security settings; `channel()` / `aio_channel()` dial it."""

    target: str
    tls_ca: Path | None = None  # CA bundle that signed the server's certificate: enables TLS
    tls_cert: Path | None = None  # client certificate chain (mTLS), with tls_key
    tls_key: Path | None = None
    token: str | None = None
    server_name: str | None = None  # override the name checked against the server certificate

    def __post_init__(self) -> None:
        if ":" not in self.target:
            raise ClientError(f"target {self.target!r} must be HOST:PORT")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ClientError("mTLS needs both a client certificate and its key")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ClientError("a client certificate needs --tls-ca to verify the server")
        if self.token is not None and self.tls_ca is None and not is_loopback(self.target):
            raise ClientError(
                f"refusing to send a bearer token in plaintext to {self.target}; "
                "use TLS (--tls-ca) or a loopback address"
            )

    @classmethod
    def from_files(
        cls,
        target: str,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        token_file: Path | None = None,
        server_name: str | None = None,
    ) -> Connection:
        """A connection whose bearer token is read from `token_file`: what command lines take."""
        token = read_token(token_file) if token_file else None
        return cls(target, tls_ca, tls_cert, tls_key, token, server_name)

    @property
    def secure(self) -> bool:
        return self.tls_ca is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(self.target, options=self._options())
        return grpc.secure_channel(self.target, self._credentials(), options=self._options())

    def aio_channel(self) -> grpc.aio.Channel:
        if not self.secure:
            return grpc.aio.insecure_channel(self.target, options=self._options())
        return grpc.aio.secure_channel(self.target, self._credentials(), options=self._options())

    def _options(self) -> list[tuple[str, object]]:
        extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return _CHANNEL_OPTIONS + extra

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.tls_ca),
            private_key=_read(self.tls_key),
            certificate_chain=_read(self.tls_cert),
        )


def read_token(path: Path) -> str:
    """The token in `path` (surrounding whitespace stripped); empty files are an error."""
    token = _read(path).decode().strip()
    if not token:
        raise ClientError(f"{path}: token file is empty")
    return token


def is_loopback(target: str) -> bool:
    """Whether a `host:port` target stays on this machine."""
    return is_loopback_host(target.rsplit(":", 1)[0].strip("[]"))


def is_loopback_host(host: str) -> bool:
    """Whether a bare host name or address stays on this machine (services use it too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientError(f"{path}: cannot read ({exc.strerror})") from None
