"""Server interceptors: one log line per RPC with method, duration and status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

logger = logging.getLogger("datastream.rpc")


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return default


def _log(method: str, started: float, code: grpc.StatusCode, peer: str) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) else logging.WARNING
    logger.log(level, "rpc method=%s status=%s duration_ms=%.2f peer=%s", method, code.name, elapsed_ms, peer)


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    """Logs every call once it ends, as ``rpc method=… status=… duration_ms=…``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                peer = context.peer()
                code = grpc.StatusCode.UNKNOWN
                try:
                    result = await inner_unary(request, context)
                    code = _code(context, grpc.StatusCode.OK)
                    return result
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    _log(method, started, code, peer)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started = time.perf_counter()
                peer = context.peer()
                code = grpc.StatusCode.UNKNOWN
                try:
                    async for item in inner_stream(request, context):
                        yield item
                    code = _code(context, grpc.StatusCode.OK)
                except (GeneratorExit, asyncio.CancelledError):
                    # The call is gone: its context must not be touched any
                    # more (grpc's cython layer crashes on a finished call).
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    _log(method, started, code, peer)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
