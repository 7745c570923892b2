"""Domain errors to gRPC status codes (each error class names its own), and the decorator that applies them."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import grpc

from datastream_app import exceptions as errors
from datastream_app.edge import database_outage

logger = logging.getLogger(__name__)


def status_code(error: errors.DatastreamError) -> grpc.StatusCode:
    """The gRPC status for a domain error: the one its class names."""
    return grpc.StatusCode[error.grpc_status]


async def abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    """End the call with the status for ``exc``: its class's, UNAVAILABLE for a database outage, else INTERNAL."""
    outage = database_outage(exc)
    if outage is not None:
        logger.warning("%s: %s: %s", method, outage.message, exc)
        exc = outage
    if isinstance(exc, errors.DatastreamError):
        await context.abort(status_code(exc), exc.message)
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
    """Turn domain errors raised by a unary servicer method into statuses; hide anything else as INTERNAL."""
    name = method.__name__

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
