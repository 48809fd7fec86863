"""Blocking clients for the encoder and decoder services.

A stream runs in the caller's thread: `run(items)` is a generator that writes chunks while fewer
than `credit` are unanswered and yields replies as they come, so it can be chained
(`decoder.run(encoder.run(chunks))`) without threads or unbounded queues.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from mcrave_client import protocol
from mcrave_client.base import ServiceBase, retryable, stream_config
from mcrave_client.proto import decoder_pb2_grpc, encoder_pb2_grpc, models_pb2, models_pb2_grpc
from mcrave_client.types import Decoded, Latents, ModelInfo, SetPresent, StreamInfo

_CLOSE = object()


class _Call:
    """A sync bidi call seen through the asyncio call's write/read/done_writing interface."""

    def __init__(self, method: Callable[..., Any], metadata: tuple) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._replies = method(iter(self._requests.get, _CLOSE), metadata=metadata)

    def write(self, request: Any) -> None:
        self._requests.put(request)

    def done_writing(self) -> None:
        self._requests.put(_CLOSE)

    def read(self) -> Any:
        return next(self._replies, None)

    def cancel(self) -> None:
        self._requests.put(_CLOSE)  # release gRPC's request-consuming thread
        self._replies.cancel()


class Stream:
    """An open Encode or Decode stream; `info` is the server's StreamStarted."""

    def __init__(
        self,
        client: _Client,
        state: protocol.EncodeStream | protocol.DecodeStream,
        method: Callable[..., Any],
    ) -> None:
        self._client = client
        self._state = state
        self._call = client.retry(lambda: self._open(method))
        self.info: StreamInfo = state.info

    def _open(self, method: Callable[..., Any]) -> _Call:
        call = _Call(method, self._client.metadata)
        try:
            call.write(self._state.config_request())
            self._state.started(call.read())
        except BaseException:
            call.cancel()
            raise
        return call

    def run(self, items: Iterable[Any]) -> Iterator[Any]:
        """Stream `items` (encoder: `(present, frames)` arrays or SetPresent; decoder: Latents)."""
        ops, it, value = protocol.exchange(self._state), iter(items), None
        try:
            while True:
                try:
                    op = ops.send(value)
                except StopIteration:
                    return
                value = None
                if op is protocol.NEXT:
                    value = next(it, protocol.END)
                elif op is protocol.READ:
                    value = self._call.read()
                elif op is protocol.DONE:
                    self._call.done_writing()
                elif isinstance(op, protocol.Write):
                    for request in op.requests:
                        self._call.write(request)
                else:
                    yield op.value
        except grpc.RpcError as err:
            raise self._client.error(err) from None
        finally:
            self._call.cancel()  # no-op after a clean end; frees server state if abandoned

    def set_present(self, present: Iterable[int]) -> None:
        """Encoder streams: change the present channels from the next chunk written on."""
        if not isinstance(self._state, protocol.EncodeStream):
            raise TypeError("only encoder streams have a present set")
        self._state.set_present(tuple(present))

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _Client(ServiceBase):
    """Channel, model discovery and UNAVAILABLE retries shared by both services."""

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.channel = self.connection.channel()
        self._models = models_pb2_grpc.ModelServiceStub(self.channel)

    def retry(self, fn: Callable[[], Any]) -> Any:
        """Call `fn`, retrying with backoff while the service is UNAVAILABLE."""
        delays = list(self.backoff.delays())
        for attempt in range(len(delays) + 1):
            try:
                return fn()
            except grpc.RpcError as err:
                if not retryable(err) or attempt == len(delays):
                    raise self.error(err) from None
            time.sleep(delays[attempt])
        raise AssertionError("unreachable")

    def list_models(self) -> list[ModelInfo]:
        reply = self.retry(
            lambda: self._models.ListModels(models_pb2.ListModelsRequest(), metadata=self.metadata)
        )
        return [ModelInfo.from_proto(m) for m in reply.models]

    def get_model(self, name: str, version: int = 0) -> ModelInfo:
        reply = self.retry(
            lambda: self._models.GetModel(
                models_pb2.GetModelRequest(name=name, version=version), metadata=self.metadata
            )
        )
        return ModelInfo.from_proto(reply)

    def _info(self, model: str | ModelInfo, version: int) -> ModelInfo:
        return model if isinstance(model, ModelInfo) else self.get_model(model, version)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EncoderClient(_Client):
    """Audio of the present channels -> latents."""

    service = "encoder"

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self.channel)

    def stream(
        self, model: str | ModelInfo, present: Iterable[int], chunk_frames: int, version: int = 0
    ) -> Stream:
        info = self._info(model, version)
        config = stream_config(info, chunk_frames=chunk_frames, present=tuple(present))
        return Stream(self, protocol.EncodeStream(config), self._stub.Encode)

    def encode(
        self,
        model: str | ModelInfo,
        chunks: Iterable[Any],
        present: Iterable[int],
        chunk_frames: int,
        version: int = 0,
    ) -> Iterator[Latents]:
        """Open a stream and run `chunks` through it."""
        with self.stream(model, present, chunk_frames, version) as stream:
            yield from stream.run(chunks)


class DecoderClient(_Client):
    """Latents -> all N channels."""

    service = "decoder"

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = decoder_pb2_grpc.DecoderServiceStub(self.channel)

    def stream(
        self, model: str | ModelInfo, chunk_frames: int, version: int = 0, seed: int = 0
    ) -> Stream:
        info = self._info(model, version)
        config = stream_config(info, chunk_frames=chunk_frames, seed=seed)
        return Stream(self, protocol.DecodeStream(config), self._stub.Decode)

    def decode(
        self,
        model: str | ModelInfo,
        latents: Iterable[Latents],
        chunk_frames: int,
        version: int = 0,
        seed: int = 0,
    ) -> Iterator[Decoded]:
        with self.stream(model, chunk_frames, version, seed) as stream:
            yield from stream.run(latents)


__all__ = ["DecoderClient", "EncoderClient", "SetPresent", "Stream"]
