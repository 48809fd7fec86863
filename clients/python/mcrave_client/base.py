"""What the sync and asyncio clients share: where the service is, how to retry, how to fail."""

from __future__ import annotations

from pathlib import Path

import grpc

from mcrave_client.backoff import Backoff
from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError, from_rpc_error
from mcrave_client.proto import stream_pb2
from mcrave_client.types import ModelInfo


class ServiceBase:
    """A service address with its retry schedule; subclasses add the channel and the calls."""

    service = "service"

    def __init__(
        self,
        target: str | Connection,
        *,
        backoff: Backoff | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        token: str | None = None,
    ) -> None:
        if isinstance(target, Connection):
            self.connection = target
        else:
            self.connection = Connection(target, tls_ca, tls_cert, tls_key, token)
        self.backoff = backoff or Backoff()
        self.metadata = self.connection.metadata()

    def error(self, err: grpc.RpcError) -> ClientError:
        return from_rpc_error(err, self.service, self.connection.target, self.connection.secure)


def retryable(err: grpc.RpcError) -> bool:
    return isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE


def stream_config(
    info: ModelInfo,
    *,
    chunk_frames: int,
    present: tuple[int, ...] = (),
    seed: int = 0,
    relay: stream_pb2.Relay | None = None,
) -> stream_pb2.StreamConfig:
    """The first message of a stream to `info`'s model version, checking chunk_frames first."""
    if chunk_frames <= 0 or chunk_frames % info.ratio:
        raise ClientError(
            f"chunk of {chunk_frames} frames must be a positive multiple of the model ratio "
            f"{info.ratio}"
        )
    if info.max_chunk and chunk_frames > info.max_chunk:
        raise ClientError(
            f"chunk of {chunk_frames} frames exceeds the server's limit of {info.max_chunk}"
        )
    return stream_pb2.StreamConfig(
        model=info.ref.name,
        version=info.ref.version,
        sample_rate=info.sample_rate,
        channels=info.channels,
        present=list(present),
        chunk_frames=chunk_frames,
        sample_format=stream_pb2.SAMPLE_FORMAT_F32LE,
        seed=seed,
        relay=relay,
    )
