"""The one place where exceptions become gRPC statuses (and get counted).

Handlers raise `ServiceError`s; this interceptor aborts with their code, message and reason
(trailing metadata). Anything else is logged with its traceback and becomes INTERNAL with a generic
message, so a bug never leaks internals or kills the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from services.common.errors import REASON_KEY, ServiceError
from services.common.metrics import ServerMetrics

log = logging.getLogger(__name__)


async def _abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    await context.abort(error.code, error.message, trailing_metadata=((REASON_KEY, error.reason),))


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(("/mcrave.", "/inference.")):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if handler.response_streaming:
            field = "stream_stream" if handler.request_streaming else "unary_stream"
            return handler._replace(**{field: self._wrap(getattr(handler, field), method)})
        field = "stream_unary" if handler.request_streaming else "unary_unary"
        return handler._replace(**{field: self._wrap(getattr(handler, field), method)})

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        self._metrics.errors.labels(method, code.name).inc()

    async def _handle(
        self, error: BaseException, context: grpc.aio.ServicerContext, method: str
    ) -> None:
        if isinstance(error, ServiceError):
            self._count(method, error.code)
            await _abort(context, error)
        log.exception("internal error in %s", method, exc_info=error)
        self._count(method, grpc.StatusCode.INTERNAL)
        await context.abort(
            grpc.StatusCode.INTERNAL, "internal server error (logged on the server)"
        )

    @contextlib.asynccontextmanager
    async def _mapped(self, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
        try:
            yield
        except asyncio.CancelledError:
            self._count(method, grpc.StatusCode.CANCELLED)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the mapper must catch everything
            await self._handle(error, context, method)

    def _wrap(self, behavior: Callable, method: str) -> Callable:
        """Handlers may return (unary, or streams written with `context.write`) or yield replies."""
        if inspect.isasyncgenfunction(behavior):

            async def wrapped_gen(
                request: object, context: grpc.aio.ServicerContext
            ) -> AsyncIterator:
                async with self._mapped(context, method):
                    async for reply in behavior(request, context):
                        yield reply

            return wrapped_gen

        async def wrapped(request: object, context: grpc.aio.ServicerContext) -> object:
            async with self._mapped(context, method):
                return await behavior(request, context)

        return wrapped
