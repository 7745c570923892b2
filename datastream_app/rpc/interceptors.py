"""Server interceptors: one log line per RPC, and bearer-token authentication of the DataService."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from channels.db import DatabaseSyncToAsync

from datastream_app import access, edge
from datastream_app.access import SYSTEM, Principal
from datastream_app.exceptions import Unauthenticated

logger = logging.getLogger("datastream.rpc")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]
# Runs around one call: (call it, request, context) -> result.
Around = Callable[[Callable[..., Awaitable[Any]], Any, grpc.aio.ServicerContext], Awaitable[Any]]

_principal: ContextVar[Principal | None] = ContextVar("datastream_principal", default=None)


def current_principal() -> Principal:
    """The caller of the RPC being served (set by CallInterceptor; SYSTEM for unprotected services)."""
    return _principal.get() or SYSTEM


def _wrap(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    # Wrapping the behaviour (not just intercepting) runs our code in the
    # call's own task, so context variables set here reach the servicer.
    # partial, not a closure: grpc looks through a partial to tell coroutine
    # from async-generator handlers.
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(around, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        # Every stream handler served here (Subscribe, Health.Watch) is a
        # coroutine writing with context.write(); a generator handler would
        # need a generator wrapper, which costs a resume per streamed message.
        if inspect.isasyncgenfunction(handler.unary_stream):
            raise TypeError(f"{handler.unary_stream!r}: stream handlers must write with context.write()")
        return grpc.unary_stream_rpc_method_handler(
            functools.partial(around, handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


CLIENT_HEADER = "x-datastream-client"
CLIENT_MAX_LENGTH = 100


def client_identity(metadata: Any) -> str:
    """The caller's ``x-datastream-client`` value as a log may show it: printable, no spaces, truncated; "-" if none."""
    value = next((v for k, v in metadata or () if k == CLIENT_HEADER), None)
    if not isinstance(value, str) or not value:
        return "-"
    cleaned = "".join(c if c.isprintable() and not c.isspace() else "?" for c in value[:CLIENT_MAX_LENGTH])
    return cleaned + ("..." if len(value) > CLIENT_MAX_LENGTH else "")


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return default


class Authenticator:
    """Resolves ``authorization: Bearer <token>`` into a principal, caching token checks briefly.

    Without a token the caller is anonymous: allowed from loopback without
    proxy metadata when anonymous access is on (edge.anonymous_for),
    UNAUTHENTICATED otherwise. A token's principal is
    cached for a few seconds; open streams are re-checked by the hub, so a
    revoked token's streams end within seconds.
    """

    CACHE_SECONDS = 5.0

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._authenticate = DatabaseSyncToAsync(access.authenticate_token, thread_sensitive=False)

    async def resolve(self, context: grpc.aio.ServicerContext) -> Principal:
        """The principal of this call, or Unauthenticated."""
        metadata = context.invocation_metadata() or ()
        header = next((value for key, value in metadata if key == "authorization"), None)
        token = edge.bearer_token(header)
        if token is None:
            proxied = edge.is_proxied(key for key, _ in metadata)
            return edge.principal(token=None, user=None, address=context.peer(), proxied=proxied)
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal: Principal = await self._authenticate(token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now + self.CACHE_SECONDS, principal)
        return principal

    async def authenticate(self, context: grpc.aio.ServicerContext) -> None:
        """Set the call's principal, or end the call with UNAUTHENTICATED (UNAVAILABLE if the database is down)."""
        try:
            _principal.set(await self.resolve(context))
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        except Exception as exc:
            outage = edge.database_outage(exc)
            if outage is None:
                raise
            logger.warning("token check failed: %s", outage.message, exc_info=True)
            await context.abort(grpc.StatusCode.UNAVAILABLE, outage.message)


class CallInterceptor(grpc.aio.ServerInterceptor):
    """The one interceptor of every call: authenticates it, then logs it once it ends.

    Authentication applies to the services in ``protected``: health and
    reflection stay open for probes and tooling. The log line is
    ``rpc method=... status=... duration_ms=... peer=... principal=... client=...``
    (client: the caller's ``x-datastream-client`` metadata, sanitised).
    Both jobs share one wrapper, built once per method.
    """

    def __init__(self, protected: set[str]) -> None:
        self.protected = protected
        self.authenticator = Authenticator()
        # method -> (the handler grpc resolved, its wrapper): a burst of
        # thousands of Subscribe calls shares one wrapper instead of building
        # closures per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap_method(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap_method(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service = method.lstrip("/").split("/", 1)[0]
        authenticate = self.authenticator.authenticate if service in self.protected else None

        def log(started: float, code: grpc.StatusCode, peer: str, context: grpc.aio.ServicerContext) -> None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) else logging.WARNING
            if not logger.isEnabledFor(level):
                return
            logger.log(
                level,
                "rpc method=%s status=%s duration_ms=%.2f peer=%s principal=%s client=%s",
                method,
                code.name,
                elapsed_ms,
                peer,
                getattr(_principal.get(), "name", "-"),
                client_identity(context.invocation_metadata()),
            )

        async def coroutine(
            call: Callable[..., Awaitable[Any]], request: Any, context: grpc.aio.ServicerContext
        ) -> Any:
            started, peer = time.perf_counter(), context.peer()
            code = grpc.StatusCode.UNKNOWN
            try:
                if authenticate is not None:
                    await authenticate(context)
                result = await call(request, context)
                code = _code(context, grpc.StatusCode.OK)
                return result
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                log(started, code, peer, context)

        return _wrap(handler, coroutine)
