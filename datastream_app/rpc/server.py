"""Builds, starts and gracefully stops the grpc.aio server together with the process hub."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import grpc
from django.conf import settings
from django.utils.module_loading import import_string
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from datastream_app.access import anonymous_notice
from datastream_app.conf import datastream_settings
from datastream_app.hub import Hub
from datastream_app.hub.health import Health
from datastream_app.rpc.frames import entry_frame
from datastream_app.rpc.interceptors import CallInterceptor
from datastream_app.rpc.servicer import SERVICE_NAME
from datastream_app.stores.watch import StoreWatchers

logger = logging.getLogger(__name__)


def server_options() -> list[tuple[str, Any]]:
    """Channel arguments sized for thousands of long-lived streams."""
    max_message = datastream_settings.MAX_VALUE_BYTES + 64 * 1024
    return [
        # grpc-core rejects a burst of new calls with CANCELLED past these.
        ("grpc.server.max_pending_requests", 100_000),
        ("grpc.server.max_pending_requests_hard_limit", 200_000),
        ("grpc.max_concurrent_streams", 100_000),
        ("grpc.max_receive_message_length", max_message),
        # Detect dead subscribers (a vanished laptop, a killed pod) within a minute.
        ("grpc.keepalive_time_ms", 30_000),
        # grpc-core also makes this the sockets' TCP_USER_TIMEOUT: a subscriber
        # that leaves sent data unacknowledged this long (a stopped or hung
        # process, its receive window shut) is dropped and reconnects to the
        # current values. Chosen, measured and tested: README "Known limits".
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server coroutine on the configured event loop (uvloop unless DATASTREAM_EVENT_LOOP=asyncio).

    ``kill -USR1 <pid>`` prints every thread's stack to stderr, so a process
    that hangs explains where.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    factory = None
    if datastream_settings.EVENT_LOOP == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def tune_gc() -> None:
    """Raise the cyclic GC thresholds and freeze what start-up allocated (server processes only)."""
    thresholds = datastream_settings.GC_THRESHOLDS
    if thresholds:
        gc.set_threshold(*thresholds)
    # Modules, settings and app registries live as long as the process: keep
    # them out of every future collection.
    gc.collect()
    gc.freeze()


def server_credentials() -> grpc.ServerCredentials | None:
    """TLS credentials from GRPC_TLS (cert and key; a client CA makes client certificates mandatory)."""
    tls = getattr(settings, "GRPC_TLS", {}) or {}
    if not tls.get("CERT"):
        return None
    with open(tls["CERT"], "rb") as cert, open(tls["KEY"], "rb") as key:
        pair = (key.read(), cert.read())
    client_ca = None
    if tls.get("CLIENT_CA"):
        with open(tls["CLIENT_CA"], "rb") as ca:
            client_ca = ca.read()
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


class GrpcService:
    """A running gRPC server: the DataService, health, reflection and the hub."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.port = 0
        self.hub = Hub(frame=entry_frame)
        self.watchers = StoreWatchers()
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Start the hub, then serve; return the bound port."""
        self.hub.health.on_change = self._on_health_change
        await self.hub.start()
        self.hub.on_refresh = self.watchers.wake
        await self.watchers.start()
        server = grpc.aio.server(
            interceptors=[CallInterceptor({SERVICE_NAME})],
            options=server_options(),
            maximum_concurrent_rpcs=None,
        )
        hook = import_string(settings.GRPC_FRAMEWORK["ROOT_HANDLERS_HOOK"])
        # The hook registers the servicers; they get this process's hub injected.
        hook(server, self.hub)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        credentials = server_credentials()
        if credentials is None:
            self.port = server.add_insecure_port(self.address)
        else:
            self.port = server.add_secure_port(self.address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind gRPC to {self.address}")
        await server.start()
        self.server = server
        await self._publish_health()
        logger.info("gRPC serving on %s (port %d)", self.address, self.port)
        notice = anonymous_notice()
        if notice:
            logger.warning(notice)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, end streams within ``grace`` seconds, then stop the hub."""
        await self.health.enter_graceful_shutdown()
        await self.watchers.stop()
        if self.server is not None:
            stopping = asyncio.create_task(self.server.stop(grace))
            # Once new calls are refused, wake every Subscribe so it ends with
            # UNAVAILABLE (clients reconnect elsewhere) instead of CANCELLED.
            await asyncio.sleep(0)
            await self.hub.stop()
            await stopping
        else:
            await self.hub.stop()

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        assert self.server is not None
        await self.server.wait_for_termination()

    def _on_health_change(self, health: Health) -> None:
        asyncio.get_running_loop().create_task(self._publish_health())

    async def _publish_health(self) -> None:
        serving = self.hub.health.serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)
