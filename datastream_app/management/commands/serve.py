"""``manage.py serve``: HTTP (admin, REST) and gRPC in one process, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from datastream_app.rpc.server import GrpcService, run, tune_gc


class _WebServer(uvicorn.Server):
    """Uvicorn without its own signal handling: this command stops HTTP and gRPC together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Command(BaseCommand):
    """The embedded profile: one process, so the in-memory channel layer reaches every stream."""

    help = "Serves HTTP and gRPC in one process."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--http", default=None, help="host:port for HTTP (default HTTP_HOST:HTTP_PORT)")
        parser.add_argument("--grpc", default=None, help="host:port for gRPC (default GRPC_HOST:GRPC_PORT)")
        parser.add_argument("--grace", type=float, default=5.0, help="seconds open streams get on shutdown")

    def handle(self, *args: Any, **options: Any) -> None:
        self.check(display_num_errors=True)
        http = options["http"] or f"{settings.HTTP_HOST}:{settings.HTTP_PORT}"
        grpc_address = options["grpc"] or f"{settings.GRPC_HOST}:{settings.GRPC_PORT}"
        tune_gc()
        run(self._serve(http, grpc_address, options["grace"]))

    async def _serve(self, http: str, grpc_address: str, grace: float) -> None:
        from settings_service.asgi import application

        host, _, port = http.rpartition(":")
        config = uvicorn.Config(
            application, host=host or "127.0.0.1", port=int(port), lifespan="off", log_level="info", access_log=True
        )
        web = _WebServer(config)
        service = GrpcService(grpc_address)
        await service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        web_task = asyncio.create_task(web.serve())
        self.stdout.write(
            f"datastream: HTTP on http://{http}/ (admin at /admin/, REST at /api/v1/), gRPC on {grpc_address}"
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({web_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        web.should_exit = True
        await service.stop(grace)
        await web_task
