"""The datastream DataService on grpc.aio: thin methods over services and the hub."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message

from datastream_app import limits, services
from datastream_app.access import Principal
from datastream_app.audit import Interface, acting
from datastream_app.changes import Entry
from datastream_app.edge import client_host
from datastream_app.hub import CloseReason, Hub, Subscription
from datastream_app.rpc.errors import MalformedRequest, abort_for, check_request, grpc_errors
from datastream_app.rpc.frames import response_frame, resumed_frame
from datastream_app.rpc.interceptors import current_principal
from protos import datastream_pb2, datastream_pb2_grpc

logger = logging.getLogger(__name__)

# How a stream the hub ended closes on the wire.
CLOSE_STATUS: dict[CloseReason, tuple[grpc.StatusCode, str]] = {
    CloseReason.SHUTDOWN: (grpc.StatusCode.UNAVAILABLE, "server is shutting down; reconnect"),
    CloseReason.REVOKED: (grpc.StatusCode.UNAUTHENTICATED, "token was revoked or expired"),
}


def peer_name(context: grpc.aio.ServicerContext) -> str:
    """The caller as history records it (its address until tokens name it)."""
    return client_host(context.peer())


class DataServicer(datastream_pb2_grpc.DataServiceServicer):
    """ListCapabilities, Sync, Subscribe and PushUpdate over the process's ``hub``.

    ``seam``, if given, is awaited inside Subscribe between registering with the
    hub and reading the snapshot (tests commit changes there; None in production).
    """

    def __init__(self, hub: Hub, *, seam: Callable[[], Awaitable[None]] | None = None) -> None:
        self.hub = hub
        self.seam = seam

    @grpc_errors
    async def ListCapabilities(
        self, request: datastream_pb2.ListCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> datastream_pb2.ListCapabilitiesResponse:
        """Every key with its value type."""
        capabilities = await services.alist_capabilities(principal=current_principal())
        return datastream_pb2.ListCapabilitiesResponse(
            capabilities=[datastream_pb2.Capability(key=c.key, value_type=c.value_type) for c in capabilities]
        )

    @grpc_errors
    async def Sync(self, request: datastream_pb2.DataRequest, context: grpc.aio.ServicerContext) -> bytes:
        """Current values of the requested keys (none: all); with since_revision, only what changed after it."""
        principal = current_principal()
        since = request.since_revision
        if since:
            changed = await services.achanges_since(
                revision=since, keys=list(request.keys), principal=principal, deletions=request.include_deletions
            )
            if changed is not None:
                return response_frame(changed) + resumed_frame(since)
        entries = await services.aget_entries(keys=list(request.keys), principal=principal)
        return response_frame(entries)

    async def Subscribe(self, request: datastream_pb2.DataRequest, context: grpc.aio.ServicerContext) -> None:
        """The current values (with since_revision: only what changed after it), then one message per change."""
        # A coroutine writing with context.write(), not an async generator:
        # each generator layer costs a resume per message on every stream.
        # For the same reason errors are mapped here rather than by @grpc_errors.
        principal = current_principal()
        hub = self.hub
        try:
            check_request(request)
            first, sub = await self._open(request, principal)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(exc, context, "Subscribe")
            return
        try:
            write = context.write
            await write(first)
            while True:
                frame = await sub.next_frame()
                if frame is None:
                    code, message = CLOSE_STATUS[sub.close_reason]
                    await context.abort(code, message)
                    return
                await write(frame)
        finally:
            hub.unsubscribe(sub)
            limits.streams.release(principal)

    async def _open(self, request: datastream_pb2.DataRequest, principal: Principal) -> tuple[bytes, Subscription]:
        keys = services.normalize_keys(request.keys)
        services.check_readable(keys, principal)
        hub = self.hub
        limits.streams.acquire(principal)
        # Subscribe before reading the snapshot: a change committed in between
        # is queued, and prime() drops whatever the snapshot already holds.
        sub = hub.subscribe(keys or None, principal, deletions=request.include_deletions)
        try:
            if self.seam is not None:
                await self.seam()
            if request.since_revision:
                resumed = await self._resume(keys, request, principal)
                if resumed is not None:
                    # Only what changed after since_revision (possibly nothing), marked as such.
                    sub.prime(resumed, floor=request.since_revision)
                    return hub.frame_of(resumed) + resumed_frame(request.since_revision), sub
            snapshot = hub.snapshot(keys)
            if snapshot is None:
                snapshot = await services.aget_entries(keys=keys, principal=principal)
                hub.remember(snapshot)
            else:
                services.check_secrets(snapshot, principal)
            sub.prime(snapshot)
            return hub.frame_of(snapshot), sub
        except BaseException:
            hub.unsubscribe(sub)
            limits.streams.release(principal)
            raise

    async def _resume(
        self, keys: list[str], request: datastream_pb2.DataRequest, principal: Principal
    ) -> dict[str, Entry] | None:
        """The entries changed after since_revision (tombstones if asked), or None: send the full snapshot."""
        since, deletions = request.since_revision, request.include_deletions
        cached = self.hub.cached(keys, since)
        if cached is not None:
            changed = services.changes_among(cached, revision=since, principal=principal, deletions=deletions)
            if changed is not None:
                return changed
        resumed: dict[str, Entry] | None
        resumed, present = await services.aresume(revision=since, keys=keys, principal=principal, deletions=deletions)
        # The next stream resuming on these keys is answered from the cache.
        self.hub.remember(present)
        return resumed

    @grpc_errors
    async def PushUpdate(self, request: datastream_pb2.Data, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        """Set one key, validated exactly as the admin validates it."""
        principal = current_principal()
        limits.pushes.take(principal)
        name = principal.name if principal.kind == "token" else peer_name(context)
        with acting(name, Interface.GRPC):
            await services.apush_wire(
                key=request.key, value=request.value, value_type=request.value_type, principal=principal
            )
        return empty_pb2.Empty()


def _serialize(message: bytes | object) -> bytes:
    # Sync and Subscribe hand over pre-serialised DataResponse bytes, so a
    # change fanned out to many streams is serialised once, not per stream.
    if isinstance(message, bytes):
        return message
    serialized: bytes = message.SerializeToString()  # type: ignore[attr-defined]
    return serialized


def _parse(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    # Parse failures become INVALID_ARGUMENT in grpc_errors instead of the
    # INTERNAL that grpc reports when a deserializer raises.
    def parse(raw: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(raw)
        except DecodeError as exc:
            return MalformedRequest(f"malformed {message_class.DESCRIPTOR.name}: {exc}")

    return parse


def add_data_servicer(servicer: DataServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` like the generated adder, with the pass-through serializer."""
    handlers = {
        "ListCapabilities": grpc.unary_unary_rpc_method_handler(
            servicer.ListCapabilities,
            request_deserializer=_parse(datastream_pb2.ListCapabilitiesRequest),
            response_serializer=_serialize,
        ),
        "Sync": grpc.unary_unary_rpc_method_handler(
            servicer.Sync,
            request_deserializer=_parse(datastream_pb2.DataRequest),
            response_serializer=_serialize,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            servicer.Subscribe,
            request_deserializer=_parse(datastream_pb2.DataRequest),
            response_serializer=_serialize,
        ),
        "PushUpdate": grpc.unary_unary_rpc_method_handler(
            servicer.PushUpdate,
            request_deserializer=_parse(datastream_pb2.Data),
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


SERVICE_NAME = datastream_pb2.DESCRIPTOR.services_by_name["DataService"].full_name
