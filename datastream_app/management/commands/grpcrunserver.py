"""``manage.py grpcrunserver [address] [--max-workers N] [--dev]``: the gRPC server alone."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import autoreload

from datastream_app.rpc.server import GrpcService, run, tune_gc


async def serve_until_signal(service: GrpcService, grace: float) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully."""
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop(grace)


class Command(BaseCommand):
    """Serve the datastream gRPC interface (health and reflection included)."""

    help = "Starts the datastream gRPC server."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address", nargs="?", help="host:port to bind (default GRPC_HOST:GRPC_PORT)")
        parser.add_argument(
            "--max-workers",
            type=int,
            default=None,
            help="ignored, accepted for compatibility (grpc.aio runs every handler on the event loop)",
        )
        parser.add_argument("--dev", action="store_true", help="restart when code changes")
        parser.add_argument("--grace", type=float, default=5.0, help="seconds open streams get on shutdown")

    def handle(self, *args: Any, **options: Any) -> None:
        address = options["address"] or f"{settings.GRPC_HOST}:{settings.GRPC_PORT}"
        if options["dev"]:
            autoreload.run_with_reloader(self._run, address, options)
        else:
            self._run(address, options)

    def _run(self, address: str, options: dict[str, Any]) -> None:
        self.check(display_num_errors=True)
        tune_gc()
        service = GrpcService(address)
        self.stdout.write(f"datastream gRPC server on {address}; Ctrl-C to stop")
        run(serve_until_signal(service, options["grace"]))
