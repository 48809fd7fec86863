"""Blocking clients for the encoder and decoder services.

Writing and reading a stream are independent (`send` / `results`), so replies are delivered the
moment they arrive even while a live source waits for its next block; `run(items)` wraps both
and chains (`decoder.run(encoder.run(chunks))`). At most `credit` chunks are ever unanswered.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from mcrave_client import protocol
from mcrave_client.base import ServiceBase, retryable, stream_config
from mcrave_client.errors import ClientError
from mcrave_client.proto import (
    decoder_pb2_grpc,
    encoder_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    stream_pb2,
)
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
    """An open Encode or Decode stream; `info` is the server's StreamStarted.

    Push style (live sources): `send()` items from one thread while another iterates
    `results()`; `close_input()` ends the input and the results run on to the tail flush.
    Pull style: `run(items)` does both, sending from a helper thread.
    """

    def __init__(
        self,
        client: _Client,
        state: protocol.EncodeStream | protocol.DecodeStream,
        method: Callable[..., Any],
    ) -> None:
        self._client = client
        self._state = state
        self._credit = threading.Condition()
        self._failed: BaseException | None = None
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

    def send(self, item: Any) -> None:
        """Write one item (encoder: `(present, frames)` array or SetPresent; decoder: Latents),
        waiting while `credit` chunks are unanswered."""
        with self._credit:
            while not self._state.may_send and self._failed is None:
                self._credit.wait()
            if self._failed is not None:
                raise ClientError(f"{self._state.kind} stream already ended: {self._failed}")
            for request in self._state.requests_for(item):
                self._call.write(request)

    def close_input(self) -> None:
        self._call.done_writing()

    def results(self) -> Iterator[Any]:
        """Replies as they arrive, up to and including the tail flush."""
        try:
            while not self._state.finished:
                reply = self._call.read()
                with self._credit:
                    result = self._state.result(reply)
                    self._credit.notify_all()
                if protocol.worth_emitting(result):
                    yield result
            if self._call.read() is not None:
                raise ClientError(f"{self._state.kind} stream: reply after the final one")
        except grpc.RpcError as err:
            self._fail(err)
            raise self._client.error(err) from None
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self._call.cancel()  # no-op after a clean end; frees server state if abandoned

    def _fail(self, exc: BaseException) -> None:
        with self._credit:
            self._failed = self._failed or exc
            self._credit.notify_all()

    def run(self, items: Iterable[Any]) -> Iterator[Any]:
        """Send `items` from a helper thread and yield the replies as they come."""
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for item in items:
                    self.send(item)
                self.close_input()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reading thread
                errors.append(exc)
                self._call.cancel()

        writer = threading.Thread(
            target=write, name=f"mcrave-{self._state.kind}-writer", daemon=True
        )
        writer.start()
        try:
            yield from self.results()
        except ClientError:
            if errors:  # the writer's error is the cause; the cancelled call only a symptom
                raise errors[0] from None
            raise
        finally:  # also when the caller stops early: unblock the writer, free the server
            self._fail(ClientError("stream closed"))
            self._call.cancel()
        writer.join()
        if errors:
            raise errors[0]

    def count_credit_by(self, decoder: Any) -> None:
        """A relayed encoder stream answers no chunk: wait on `decoder`'s replies instead (call
        before sending)."""
        self._credit = decoder._credit
        self._state.credit_from = decoder._state

    def set_present(self, present: Iterable[int]) -> None:
        """Encoder streams: change the present channels from the next chunk written on (a
        decoder stream follows the `present` of the Latents it is given)."""
        if not isinstance(self._state, protocol.EncodeStream):
            raise TypeError("only encoder streams have a present set")
        with self._credit:
            self._state.set_present(tuple(present))

    def cancel(self) -> None:
        self._fail(ClientError("cancelled"))
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


class ModelClient(_Client):
    """Model discovery alone (ListModels/GetModel): every service answers it."""

    service = "server"


class EncoderClient(_Client):
    """Audio of the present channels -> latents."""

    service = "encoder"

    def __init__(self, target: Any, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self.channel)

    def stream(
        self,
        model: str | ModelInfo,
        present: Iterable[int],
        chunk_frames: int,
        version: int = 0,
        keep_audio: bool = False,
        relay: stream_pb2.Relay | None = None,
    ) -> Stream:
        """`keep_audio`: each `Latents` result carries the audio chunk that produced it (what a
        decoder stream with a present set needs). `relay`: forward the latents to a decoder
        stream instead of answering with them (see `Pipeline.stream`)."""
        info = self._info(model, version)
        config = stream_config(info, chunk_frames=chunk_frames, present=tuple(present), relay=relay)
        return Stream(self, protocol.EncodeStream(config, keep_audio), self._stub.Encode)

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
        self,
        model: str | ModelInfo,
        chunk_frames: int,
        version: int = 0,
        seed: int = 0,
        present: Iterable[int] = (),
        relay_token: str = "",
    ) -> Stream:
        """`present`: the channels whose audio travels with the latents (`Latents.audio`) for
        the spatial stage; empty = latent-only (the decoder renders from the latents alone).
        `relay_token`: an encoder stream feeds this one (read its `results()`; send nothing)."""
        info = self._info(model, version)
        relay = stream_pb2.Relay(token=relay_token) if relay_token else None
        config = stream_config(
            info, chunk_frames=chunk_frames, present=tuple(present), seed=seed, relay=relay
        )
        return Stream(self, protocol.DecodeStream(config), self._stub.Decode)

    def decode(
        self,
        model: str | ModelInfo,
        latents: Iterable[Latents],
        chunk_frames: int,
        version: int = 0,
        seed: int = 0,
        present: Iterable[int] = (),
    ) -> Iterator[Decoded]:
        with self.stream(model, chunk_frames, version, seed, present) as stream:
            yield from stream.run(latents)


__all__ = ["DecoderClient", "EncoderClient", "ModelClient", "SetPresent", "Stream"]
