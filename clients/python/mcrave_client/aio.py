"""asyncio clients for the encoder and decoder services (grpc.aio), mirroring `client.py`.

`run(items)` is an async generator taking a sync or async iterable, so
`decoder_stream.run(encoder_stream.run(chunks))` pipes latents on as they arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from mcrave_client import protocol
from mcrave_client.base import ServiceBase, retryable, stream_config
from mcrave_client.pipeline import check_same_model, choose_model
from mcrave_client.proto import decoder_pb2_grpc, encoder_pb2_grpc, models_pb2, models_pb2_grpc
from mcrave_client.types import Decoded, ModelInfo, StreamInfo


class AsyncStream:
    """An open Encode or Decode stream; create with `await client.stream(...)`."""

    def __init__(
        self, client: _AsyncClient, state: protocol.EncodeStream | protocol.DecodeStream
    ) -> None:
        self._client = client
        self._state = state
        self._call: grpc.aio.StreamStreamCall | None = None
        self.info: StreamInfo | None = None

    async def open(self, method: Callable[..., grpc.aio.StreamStreamCall]) -> AsyncStream:
        async def attempt() -> None:
            self._call = method(metadata=self._client.metadata)
            try:
                await self._call.write(self._state.config_request())
                self._state.started(await self._read())
            except BaseException:
                self._call.cancel()
                raise

        await self._client.retry(attempt)
        self.info = self._state.info
        return self

    async def _read(self) -> Any:
        reply = await self._call.read()
        return None if reply is grpc.aio.EOF else reply

    async def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
        """Stream `items` (encoder: `(present, frames)` arrays or SetPresent; decoder: Latents)."""
        next_item = _next_fn(items)
        ops, value = protocol.exchange(self._state), None
        try:
            while True:
                try:
                    op = ops.send(value)
                except StopIteration:
                    return
                value = None
                if op is protocol.NEXT:
                    value = await next_item()
                elif op is protocol.READ:
                    value = await self._read()
                elif op is protocol.DONE:
                    await self._call.done_writing()
                elif isinstance(op, protocol.Write):
                    for request in op.requests:
                        await self._call.write(request)
                else:
                    yield op.value
        except grpc.RpcError as err:
            raise self._client.error(err) from None
        finally:
            self._call.cancel()

    def set_present(self, present: Iterable[int]) -> None:
        if not isinstance(self._state, protocol.EncodeStream):
            raise TypeError("only encoder streams have a present set")
        self._state.set_present(tuple(present))

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


def _next_fn(items: Iterable[Any] | AsyncIterable[Any]) -> Callable[[], Awaitable[Any]]:
    if isinstance(items, AsyncIterable):
        ait = aiter(items)
        return lambda: anext(ait, protocol.END)
    it = iter(items)

    async def next_sync() -> Any:
        return next(it, protocol.END)

    return next_sync


class _AsyncClient(ServiceBase):
    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.channel = self.connection.aio_channel()
        self._models = models_pb2_grpc.ModelServiceStub(self.channel)

    async def retry(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        delays = list(self.backoff.delays())
        for attempt in range(len(delays) + 1):
            try:
                return await fn()
            except grpc.RpcError as err:
                if not retryable(err) or attempt == len(delays):
                    raise self.error(err) from None
            await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable")

    async def list_models(self) -> list[ModelInfo]:
        reply = await self.retry(
            lambda: self._models.ListModels(models_pb2.ListModelsRequest(), metadata=self.metadata)
        )
        return [ModelInfo.from_proto(m) for m in reply.models]

    async def get_model(self, name: str, version: int = 0) -> ModelInfo:
        reply = await self.retry(
            lambda: self._models.GetModel(
                models_pb2.GetModelRequest(name=name, version=version), metadata=self.metadata
            )
        )
        return ModelInfo.from_proto(reply)

    async def _info(self, model: str | ModelInfo, version: int) -> ModelInfo:
        return model if isinstance(model, ModelInfo) else await self.get_model(model, version)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> _AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncEncoderClient(_AsyncClient):
    service = "encoder"

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self.channel)

    async def stream(
        self, model: str | ModelInfo, present: Iterable[int], chunk_frames: int, version: int = 0
    ) -> AsyncStream:
        info = await self._info(model, version)
        config = stream_config(info, chunk_frames=chunk_frames, present=tuple(present))
        return await AsyncStream(self, protocol.EncodeStream(config)).open(self._stub.Encode)


class AsyncDecoderClient(_AsyncClient):
    service = "decoder"

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = decoder_pb2_grpc.DecoderServiceStub(self.channel)

    async def stream(
        self, model: str | ModelInfo, chunk_frames: int, version: int = 0, seed: int = 0
    ) -> AsyncStream:
        info = await self._info(model, version)
        config = stream_config(info, chunk_frames=chunk_frames, seed=seed)
        return await AsyncStream(self, protocol.DecodeStream(config)).open(self._stub.Decode)


class AsyncPipelineStream:
    """An encoder stream feeding a decoder stream; `run` yields decoded audio as it arrives."""

    def __init__(self, encoder: AsyncStream, decoder: AsyncStream) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.info = encoder.info

    def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Decoded]:
        return self.decoder.run(self.encoder.run(items))

    def set_present(self, present: Iterable[int]) -> None:
        self.encoder.set_present(present)

    def cancel(self) -> None:
        self.encoder.cancel()
        self.decoder.cancel()

    async def __aenter__(self) -> AsyncPipelineStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncPipeline:
    """asyncio twin of `mcrave_client.Pipeline`: the decoder opens on the encoder's version."""

    def __init__(self, encoder: AsyncEncoderClient, decoder: AsyncDecoderClient) -> None:
        self.encoder, self.decoder = encoder, decoder

    async def model(self, name: str | None = None, version: int = 0) -> ModelInfo:
        if name is None:
            models = await self.encoder.list_models()
            return choose_model(models, self.encoder.connection.target)
        return await self.encoder.get_model(name, version)

    async def stream(
        self,
        model: str | ModelInfo,
        present: Iterable[int],
        chunk_frames: int,
        version: int = 0,
        seed: int = 0,
    ) -> AsyncPipelineStream:
        encoder = await self.encoder.stream(model, present, chunk_frames, version)
        try:
            bound = encoder.info.model
            decoder = await self.decoder.stream(bound.name, chunk_frames, bound.version, seed)
            try:
                check_same_model(encoder.info, decoder.info)
            except BaseException:
                decoder.cancel()
                raise
        except BaseException:
            encoder.cancel()
            raise
        return AsyncPipelineStream(encoder, decoder)

    async def close(self) -> None:
        await self.encoder.close()
        await self.decoder.close()


__all__ = [
    "AsyncDecoderClient",
    "AsyncEncoderClient",
    "AsyncPipeline",
    "AsyncPipelineStream",
    "AsyncStream",
]
