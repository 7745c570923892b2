"""Domain errors to gRPC status codes: the one table, and the servicer decorator that applies it."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc

from datastream_app import exceptions as errors

logger = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS_CODES: list[tuple[type[errors.DatastreamError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Aborted, grpc.StatusCode.ABORTED),
]


def status_code(error: errors.DatastreamError) -> grpc.StatusCode:
    """The gRPC status for a domain error."""
    for cls, code in STATUS_CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _is_database_outage(exc: BaseException) -> bool:
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


async def abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    """End the call with the status for ``exc``: its mapped code, UNAVAILABLE for a database outage, else INTERNAL."""
    if isinstance(exc, errors.DatastreamError):
        await context.abort(status_code(exc), exc.message)
    if _is_database_outage(exc):
        logger.warning("%s: database unavailable: %s", method, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable; retry shortly")
    logger.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class MalformedRequest:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def check_request(request: Any) -> None:
    """InvalidArgument if the request bytes did not parse."""
    if isinstance(request, MalformedRequest):
        raise errors.InvalidArgument(request.reason)


def grpc_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors raised by a servicer method into statuses; hide anything else as INTERNAL."""
    name = method.__name__
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                check_request(request)
                async for item in method(self, request, context):
                    yield item
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await abort_for(exc, context, name)

        return stream

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            check_request(request)
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(exc, context, name)

    return unary
