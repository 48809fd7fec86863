"""asyncio clients for the encoder and decoder services (grpc.aio), mirroring `client.py`.

Push style: `await send(item)` in one task, `async for r in results()` in another; `run(items)`
(sync or async iterable) does both, so `decoder_stream.run(encoder_stream.run(chunks))` pipes
latents on as they arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from mcrave_client import protocol
from mcrave_client.base import ServiceBase, retryable, stream_config
from mcrave_client.errors import ClientError
from mcrave_client.pipeline import PipelineStream, StreamPlan, choose_model, join
from mcrave_client.proto import (
    decoder_pb2_grpc,
    encoder_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    stream_pb2,
)
from mcrave_client.types import ModelInfo, StreamInfo


class AsyncStream:
    """An open Encode or Decode stream; create with `await client.stream(...)`."""

    def __init__(
        self, client: _AsyncClient, state: protocol.EncodeStream | protocol.DecodeStream
    ) -> None:
        self._client = client
        self._state = state
        self._call: grpc.aio.StreamStreamCall | None = None
        self._credit = asyncio.Condition()
        self._failed: BaseException | None = None
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

    async def send(self, item: Any) -> None:
        """Write one item, waiting while `credit` chunks are unanswered."""
        async with self._credit:
            await self._credit.wait_for(lambda: self._state.may_send or self._failed)
            if self._failed is not None:
                raise ClientError(f"{self._state.kind} stream already ended: {self._failed}")
            for request in self._state.requests_for(item):
                await self._call.write(request)

    async def close_input(self) -> None:
        await self._call.done_writing()

    async def results(self) -> AsyncIterator[Any]:
        """Replies as they arrive, up to and including the tail flush."""
        try:
            while not self._state.finished:
                reply = await self._read()
                async with self._credit:
                    result = self._state.result(reply)
                    self._credit.notify_all()
                if protocol.worth_emitting(result):
                    yield result
            if await self._read() is not None:
                raise ClientError(f"{self._state.kind} stream: reply after the final one")
        except grpc.RpcError as err:
            await self._fail(err)
            raise self._client.error(err) from None
        except BaseException as exc:
            await self._fail(exc)
            raise
        finally:
            self._call.cancel()

    async def _fail(self, exc: BaseException) -> None:
        async with self._credit:
            self._failed = self._failed or exc
            self._credit.notify_all()

    async def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
        """Send `items` from a helper task and yield the replies as they come."""

        async def write() -> None:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    await self.send(item)
            else:
                for item in items:
                    await self.send(item)
            await self.close_input()

        writer = asyncio.create_task(write())
        try:
            async for result in self.results():
                yield result
        except ClientError:
            if writer.done() and not writer.cancelled() and writer.exception() is not None:
                raise writer.exception() from None
            raise
        finally:
            await self._fail(ClientError("stream closed"))
            self._call.cancel()
            if not writer.done():
                writer.cancel()
        await writer  # re-raises the writer's error, if any

    def count_credit_by(self, decoder: Any) -> None:
        """A relayed encoder stream answers no chunk: wait on `decoder`'s replies instead (call
        before sending)."""
        self._credit = decoder._credit
        self._state.credit_from = decoder._state

    def set_present(self, present: Iterable[int]) -> None:
        if not isinstance(self._state, protocol.EncodeStream):
            raise TypeError("only encoder streams have a present set")
        self._state.set_present(tuple(present))

    def cancel(self) -> None:
        self._failed = self._failed or ClientError("cancelled")
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncRelayedStream(PipelineStream):
    """asyncio twin of `mcrave_client.pipeline.RelayedStream`: the chunks go to the encoder from
    a helper task, the decoded audio comes from the decoder stream, which the encoder feeds."""

    async def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
        failed: list[BaseException] = []

        async def drive() -> None:
            try:
                async for _ in self.encoder.run(items):  # relayed: only the empty final reply
                    pass
            except BaseException as exc:
                failed.append(exc)
                self.decoder.cancel()  # its reader would otherwise wait for a feeder
                raise

        driver = asyncio.create_task(drive())
        try:
            async for block in self.decoder.results():
                yield block
        except BaseException:
            self.encoder.cancel()
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)
            if failed:
                raise failed[0] from None
            raise
        await driver


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
        self,
        model: str | ModelInfo,
        present: Iterable[int],
        chunk_frames: int,
        version: int = 0,
        keep_audio: bool = False,
        relay: stream_pb2.Relay | None = None,
    ) -> AsyncStream:
        info = await self._info(model, version)
        config = stream_config(info, chunk_frames=chunk_frames, present=tuple(present), relay=relay)
        state = protocol.EncodeStream(config, keep_audio)
        return await AsyncStream(self, state).open(self._stub.Encode)


class AsyncDecoderClient(_AsyncClient):
    service = "decoder"

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = decoder_pb2_grpc.DecoderServiceStub(self.channel)

    async def stream(
        self,
        model: str | ModelInfo,
        chunk_frames: int,
        version: int = 0,
        seed: int = 0,
        present: Iterable[int] = (),
        relay_token: str = "",
    ) -> AsyncStream:
        info = await self._info(model, version)
        relay = stream_pb2.Relay(token=relay_token) if relay_token else None
        config = stream_config(
            info, chunk_frames=chunk_frames, present=tuple(present), seed=seed, relay=relay
        )
        return await AsyncStream(self, protocol.DecodeStream(config)).open(self._stub.Decode)


class AsyncPipeline:
    """asyncio twin of `mcrave_client.Pipeline`: the decoder opens on the encoder's version."""

    def __init__(
        self,
        encoder: AsyncEncoderClient,
        decoder: AsyncDecoderClient,
        *,
        relay: bool | str = False,
    ) -> None:
        self.encoder, self.decoder, self.relay = encoder, decoder, relay

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
        latent_only: bool = False,
        relay: bool | str | None = None,
    ) -> PipelineStream:
        plan = StreamPlan.of(self, present, latent_only, relay)
        args = plan.decoder_args(model, chunk_frames, version, seed)
        decoder = await self.decoder.stream(*args)
        try:
            encoder = await self.encoder.stream(*plan.encoder_args(decoder.info, chunk_frames))
        except BaseException:
            decoder.cancel()
            raise
        return join(encoder, decoder, AsyncRelayedStream if plan.relay else None)

    async def close(self) -> None:
        await self.encoder.close()
        await self.decoder.close()


__all__ = [
    "AsyncDecoderClient",
    "AsyncEncoderClient",
    "AsyncPipeline",
    "AsyncStream",
]
