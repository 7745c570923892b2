"""datastream's production profile as processes: PostgreSQL, Redis, a web process, gRPC process i on core i."""

# PostgreSQL and Redis come from ``tests.servers`` (the suite's own helpers), with their data in /dev/shm.
# The web process (``uvicorn settings_service.asgi:application``), PostgreSQL and Redis may use every core.

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.clients import HttpClient, OursClient, RestPush, new_channel
from bench.common import HOT_KEY
from bench.procs import all_cores, free_port, spawn, stop_group, unpinned
from bench.systems import ROOT, START_TIMEOUT
from tests.servers import BinaryNotFound, PostgresServer, RedisServer, find_binary

PRODUCTION = "production"


def missing_servers() -> list[str]:
    """Why PostgreSQL or Redis cannot be started here (empty when both can)."""
    missing = []
    for name in ("postgres", "initdb", "redis-server"):
        try:
            find_binary(name)
        except BinaryNotFound as exc:
            missing.append(str(exc))
    return missing


@contextlib.contextmanager
def temp_in_memory() -> Iterator[str]:
    """Make ``tempfile`` create directories in /dev/shm for the block; yields where they go."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    saved = tempfile.tempdir
    # The helpers take no directory argument; they call tempfile.mkdtemp(), which honours this.
    if base is not None:
        tempfile.tempdir = base
    try:
        yield base or tempfile.gettempdir()
    finally:
        tempfile.tempdir = saved


def server_version(binary: str) -> str:
    """``postgres (PostgreSQL) 15.8`` -> ``15.8``; the first version-looking word of ``--version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"v?=?(\d+\.\d+(?:\.\d+)?)", out)
    return match.group(1) if match else "unknown"


class Production:
    """The production topology the harness starts, measures and stops."""

    name = PRODUCTION

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.grpc: list[subprocess.Popen[bytes]] = []
        self.grpc_targets: list[str] = []
        self.http_port = 0
        self.data_place = ""
        self.env: dict[str, str] = {}

    # Start and stop

    def start_backends(self) -> None:
        """Start PostgreSQL and Redis, migrate and seed the keys (blocking; call from the main thread)."""
        # The main thread, so that the helpers tie the servers' lives to the harness's (they only do that
        # from the main thread), and unpinned, so the servers are not confined to the harness's core.
        with temp_in_memory() as place, unpinned():
            self.postgres = PostgresServer()
            self.redis = RedisServer()
            self.postgres.start()
            self.redis.start()
        self.data_place = place
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DATABASE_URL", "REDIS_URL", "DATASTREAM_"))
                and k not in {"DEBUG", "GRPC_ENABLE_FORK_SUPPORT"}
            },
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            # The harness speaks plain HTTP to the web process, as a TLS-terminating proxy would.
            "SECURE_SSL_REDIRECT": "0",
            # Every client is the harness on loopback, with no proxy: anonymous access as in the embedded profile.
            "DATASTREAM_ANONYMOUS_LOOPBACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
        for argv in (
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            [sys.executable, "-m", "bench.seed"],
        ):
            with open(self.logs / "production-setup.log", "ab") as log:
                subprocess.run(
                    argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=180
                )

    async def start_web(self) -> None:
        """Start the web process on every core and wait until /readyz answers 200."""
        self.http_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "settings_service.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.http_port),
        ]
        self.web = spawn(argv, log=self.logs / "production-web.log", env=self.env, cwd=ROOT, core=all_cores())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.web.poll() is not None:
                raise RuntimeError(f"web process exited at start; see {self.logs / 'production-web.log'}")
            http = HttpClient("127.0.0.1", self.http_port)
            try:
                status, _ = await asyncio.wait_for(http.request("GET", "/readyz"), 2.0)
                if status == 200:
                    return
            except Exception:  # not listening yet
                pass
            finally:
                await http.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"web process not ready in {START_TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)

    async def start_grpc(self, count: int) -> None:
        """Start ``count`` gRPC processes, process i pinned to core i, and wait until each serves."""
        self.stop_grpc()
        for index in range(count):
            target = f"127.0.0.1:{free_port()}"
            argv = [sys.executable, "manage.py", "grpcrunserver", target, "--grace", "2"]
            log = self.logs / f"production-grpc{index}.log"
            self.grpc.append(spawn(argv, log=log, env=self.env, cwd=ROOT, core=index))
            self.grpc_targets.append(target)
        await asyncio.gather(*(self._wait_serving(i) for i in range(count)))

    async def _wait_serving(self, index: int) -> None:
        # SERVING means the hub reached PostgreSQL and joined the Redis group: pushes will reach it.
        deadline = time.monotonic() + START_TIMEOUT
        target = self.grpc_targets[index]
        while True:
            if self.grpc[index].poll() is not None:
                raise RuntimeError(f"gRPC process {index} exited at start; see production-grpc{index}.log")
            channel = new_channel(target)
            client = OursClient(target)
            try:
                stub = health_pb2_grpc.HealthStub(channel)
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING and await client.sync([HOT_KEY]) == 1:
                    return
            except grpc.aio.AioRpcError:
                pass
            finally:
                await channel.close()
                await client.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"gRPC process {index} not serving in {START_TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)

    def stop_grpc(self) -> None:
        """Stop every gRPC process; never raises."""
        for process in self.grpc:
            stop_group(process)
        self.grpc = []
        self.grpc_targets = []

    def cleanup(self) -> None:
        """Stop every process and delete PostgreSQL's and Redis's data; never raises."""
        self.stop_grpc()
        stop_group(self.web)
        self.web = None
        for server in (self.redis, self.postgres):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()
                # A server that failed to stop leaves its directory; it is throwaway either way.
                shutil.rmtree(server.dir, ignore_errors=True)
        self.redis = self.postgres = None

    # What fanout() needs

    def client(self) -> RestPush:
        """Pushes go to the web process over REST, as an operator's script or the admin would make them."""
        return RestPush("127.0.0.1", self.http_port)

    @property
    def pids(self) -> list[int]:
        """The gRPC processes: the CPU per update is summed over these."""
        return [process.pid for process in self.grpc]

    @property
    def web_pid(self) -> int:
        """The web process."""
        assert self.web is not None
        return self.web.pid

    def versions(self) -> str:
        """PostgreSQL's and Redis's versions."""
        postgres = server_version(find_binary("postgres"))
        redis = server_version(find_binary("redis-server"))
        return f"PostgreSQL {postgres}, Redis {redis}"
