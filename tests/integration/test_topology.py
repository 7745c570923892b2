"""The production topology as real processes: PostgreSQL, Redis, one web process, two gRPC processes.

Each test starts what it needs on free loopback ports and stops it; nothing is
shared with the test's own Django database.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import datastream_pb2, datastream_pb2_grpc
from tests.admin_session import AdminSession
from tests.servers import BinaryNotFound, PostgresServer, RedisServer, free_port, skip_unless_installed

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
ADMIN_PASSWORD = "topology-" + secrets.token_hex(8)


def eventually(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # the thing polled may still be starting
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")


@dataclass
class Process:
    """A child process of this test: started, signalled and reaped by it."""

    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[str] | None = None
    log: Path | None = None

    def start(self, log: Path) -> Process:
        self.log = log
        handle = log.open("a")
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Servers dump every thread's stack on SIGUSR1: the failure then says where it hung.
            self.popen.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(
                f"{self.argv[2:4]} still running {timeout:.0f}s after signal {sig}; its log ends:\n"
                + self.output()[-6000:]
            ) from None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text() if self.log else ""


@dataclass
class Topology:
    """PostgreSQL, Redis, a web process and two gRPC processes, all on loopback."""

    tmp: Path
    postgres: PostgresServer
    redis: RedisServer
    env: dict[str, str] = field(default_factory=dict)
    web_port: int = 0
    grpc_ports: list[int] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(argv, self.env).start(self.tmp / f"{name}.log")
        self.processes.append(process)
        return process

    def start_grpc(self, index: int) -> Process:
        port = self.grpc_ports[index]
        process = self.spawn(
            f"grpc{index}", [sys.executable, "manage.py", "grpcrunserver", f"127.0.0.1:{port}", "--grace", "3"]
        )
        eventually(lambda: health(port) == health_pb2.HealthCheckResponse.SERVING, what=f"gRPC {index} serving")
        return process

    def web(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=10)

    def push(self, key: str, value: object) -> dict:
        conn = self.web()
        conn.request(
            "POST", "/api/v1/push", json.dumps({"key": key, "value": value}), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return body


def health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status


def sync(port: int, *keys: str) -> dict[str, bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = datastream_pb2_grpc.DataServiceStub(channel).Sync(datastream_pb2.DataRequest(keys=keys), timeout=5)
    return {k: v.value for k, v in response.data.items()}


class Watcher:
    """A Subscribe stream read in a thread; ``latest`` is what the subscriber holds."""

    def __init__(self, port: int, *keys: str) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.call = datastream_pb2_grpc.DataServiceStub(self.channel).Subscribe(datastream_pb2.DataRequest(keys=keys))
        self.latest: dict[str, bytes] = {}
        self.ended: queue.Queue[grpc.StatusCode] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                for key, data in message.data.items():
                    self.latest[key] = data.value
        except grpc.RpcError as error:
            self.ended.put(error.code())

    def holds(self, key: str, value: bytes) -> bool:
        return self.latest.get(key) == value

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    """Migrated PostgreSQL with the demo settings and an admin, Redis, web and two gRPC processes."""
    try:
        postgres, redis = PostgresServer(), RedisServer()
    except BinaryNotFound as exc:
        skip_unless_installed(exc)
    with postgres, redis:
        top = Topology(tmp=tmp_path, postgres=postgres, redis=redis)
        top.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DATASTREAM_"))},
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            # Clients here speak plain HTTP to the process, as a TLS proxy would.
            "SECURE_SSL_REDIRECT": "0",
            "DATASTREAM_RESYNC_INTERVAL_MS": "300",
            # The clients here are anonymous on loopback (off by default with PostgreSQL).
            "DATASTREAM_ANONYMOUS_LOOPBACK": "1",
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
        }
        top.manage("migrate", "--noinput", "-v", "0")
        top.manage("bootstrap", "--no-admin")
        top.manage("createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com")
        top.web_port = free_port()
        top.grpc_ports = [free_port(), free_port()]
        top.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "settings_service.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(top.web_port),
            ],
        )
        eventually(lambda: _status(top, "/readyz") == 200, what="web ready")
        for index in range(2):
            top.start_grpc(index)
        try:
            yield top
        finally:
            for process in top.processes:
                if process.alive:
                    process.stop(signal.SIGKILL)


def _status(top: Topology, path: str) -> int:
    conn = top.web()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def test_topology__rest_and_admin_edits_on_web__reach_subscribers_on_both_grpc_processes(topology):
    watchers = [Watcher(port, "max_connections") for port in topology.grpc_ports]
    for watcher in watchers:
        eventually(lambda w=watcher: w.holds("max_connections", b"10"), what="initial value")

    topology.push("max_connections", 20)
    for watcher in watchers:
        eventually(lambda w=watcher: w.holds("max_connections", b"20"), what="REST edit on both gRPC processes")

    browser = AdminSession(topology.web_port)
    browser.login("ops", ADMIN_PASSWORD)
    path = browser.change_path("max_connections")
    status, page = browser.save(path, "30")
    assert status == 302, page[:2000]

    for watcher in watchers:
        eventually(lambda w=watcher: w.holds("max_connections", b"30"), what="admin edit on both gRPC processes")
        watcher.close()


def test_topology__sigterm_on_a_grpc_process__exits_zero_and_the_example_client_reconnects(topology):
    port = topology.grpc_ports[0]
    client = topology.spawn(
        "client",
        [
            sys.executable,
            "examples/client.py",
            "--target",
            f"127.0.0.1:{port}",
            "--max-backoff",
            "1",
            "max_connections",
        ],
    )
    eventually(lambda: "update: max_connections = 10" in client.output(), what="client subscribed")

    grpc0 = topology.processes[1]
    assert grpc0.stop(signal.SIGTERM) == 0
    eventually(lambda: "reconnecting" in client.output() and "UNAVAILABLE" in client.output(), what="client retries")
    topology.push("max_connections", 42)  # while the process it talks to is gone
    topology.start_grpc(0)

    eventually(lambda: "update: max_connections = 42" in client.output(), what="client back on current values")
    client.stop()


def test_topology__redis_stopped_and_restarted__sync_keeps_serving_and_nobody_stays_stale(topology):
    watchers = [Watcher(port, "rate_limit") for port in topology.grpc_ports]
    for watcher in watchers:
        eventually(lambda w=watcher: w.holds("rate_limit", b"1000"), what="initial value")

    topology.redis.stop()
    for port in topology.grpc_ports:
        eventually(lambda p=port: health(p) == health_pb2.HealthCheckResponse.NOT_SERVING, what="NOT_SERVING")
        assert sync(port, "rate_limit") == {"rate_limit": b"1000"}
    topology.push("rate_limit", 5)  # published into a dead layer: only the database has it
    for watcher in watchers:
        eventually(lambda w=watcher: w.holds("rate_limit", b"5"), what="change made while Redis was down")

    topology.redis.start()
    for port in topology.grpc_ports:
        eventually(lambda p=port: health(p) == health_pb2.HealthCheckResponse.SERVING, what="SERVING again")
    topology.push("rate_limit", 6)
    for watcher in watchers:
        eventually(lambda w=watcher: w.holds("rate_limit", b"6"), what="change after Redis returned")
        watcher.close()
    assert all(p.alive for p in topology.processes)


def test_topology__postgres_restarted__unavailable_meanwhile_then_recovers_on_its_own(topology):
    port = topology.grpc_ports[1]
    assert sync(port, "debug_enabled") == {"debug_enabled": b"false"}

    topology.postgres.stop()
    with pytest.raises(grpc.RpcError) as error:
        sync(port, "debug_enabled")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _status(topology, "/readyz") == 503
    assert all(p.alive for p in topology.processes)

    topology.postgres.start()
    eventually(lambda: sync(port, "debug_enabled") == {"debug_enabled": b"false"}, what="Sync recovered")
    eventually(lambda: _status(topology, "/readyz") == 200, what="web ready again")
    topology.push("debug_enabled", True)
    eventually(lambda: sync(topology.grpc_ports[0], "debug_enabled") == {"debug_enabled": b"true"}, what="push")
