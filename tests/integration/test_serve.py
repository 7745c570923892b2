"""The embedded profile as `make run` starts it: real processes, free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos import datastream_pb2, datastream_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
# The running `serve` process of each fixture instance, by its HTTP port.
PROCESSES: dict[str, subprocess.Popen] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def http_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


def wait_http(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else "exited"
        try:
            http_json(url)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Migrated and bootstrapped var dir, then `manage.py serve` running; SIGTERM afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(DATASTREAM_VAR_DIR=str(tmp_path), HTTP_PORT=str(free_port()), GRPC_PORT=str(free_port()))
    manage(env, "migrate", "--noinput", "-v", "0")
    env["BOOTSTRAP_OUTPUT"] = manage(env, "bootstrap")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{env['HTTP_PORT']}/healthz", process)
        PROCESSES[env["HTTP_PORT"]] = process
        yield env
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_bootstrap__run_twice__demo_settings_and_admin_created_once(embedded):
    again = manage(embedded, "bootstrap")

    assert "created admin user: username admin, password" in embedded["BOOTSTRAP_OUTPUT"]
    assert "created demo setting max_connections = 10 (int)" in embedded["BOOTSTRAP_OUTPUT"]
    assert "created" not in again
    assert "admin user exists" in again
    credentials = Path(embedded["DATASTREAM_VAR_DIR"]) / "admin-credentials.txt"
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"


def test_serve__rest_push__reaches_grpc_subscriber_in_the_same_process(embedded):
    base = f"http://127.0.0.1:{embedded['HTTP_PORT']}"
    capabilities = http_json(f"{base}/api/v1/capabilities")["capabilities"]
    with grpc.insecure_channel(f"127.0.0.1:{embedded['GRPC_PORT']}") as channel:
        stream = datastream_pb2_grpc.DataServiceStub(channel).Subscribe(
            datastream_pb2.DataRequest(keys=["max_connections"]), timeout=30
        )
        first = next(stream)
        http_json(f"{base}/api/v1/push", {"key": "max_connections", "value": 20})
        update = next(stream)
        stream.cancel()

    assert {"key": "debug_enabled", "value_type": "bool"} in capabilities
    with urllib.request.urlopen(f"{base}/static/admin/css/base.css", timeout=10) as css:
        assert css.status == 200  # the admin is styled without a separate static server
    assert first.data["max_connections"].value == b"10"
    assert update.data["max_connections"].value == b"20"


def test_serve__many_rest_requests__database_connections_do_not_pile_up(embedded):
    base = f"http://127.0.0.1:{embedded['HTTP_PORT']}"
    process = PROCESSES[embedded["HTTP_PORT"]]
    database = Path(embedded["DATASTREAM_VAR_DIR"]) / "datastream.sqlite3"

    def open_database_files() -> int:
        fds = Path(f"/proc/{process.pid}/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd).startswith(str(database)))

    for value in range(60):
        http_json(f"{base}/api/v1/push", {"key": "max_connections", "value": value})
        http_json(f"{base}/api/v1/sync?keys=max_connections")

    # Each request runs in a thread of its own: a connection kept for reuse
    # would stay open with its -wal and -shm files, three descriptors a request.
    assert open_database_files() <= 12


def test_serve__sigterm__streams_end_unavailable_and_process_exits_zero(embedded):
    with grpc.insecure_channel(f"127.0.0.1:{embedded['GRPC_PORT']}") as channel:
        stream = datastream_pb2_grpc.DataServiceStub(channel).Subscribe(datastream_pb2.DataRequest(), timeout=30)
        next(stream)
        process = PROCESSES[embedded["HTTP_PORT"]]
        process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as error:
            next(stream)

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert process.wait(timeout=20) == 0


def test_examples__client_and_updater__work_against_make_run(embedded):
    target = f"127.0.0.1:{embedded['GRPC_PORT']}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=embedded, capture_output=True, text=True, timeout=60
        )

    pushed = run("examples/updater.py", "--target", target)
    refused = run("examples/updater.py", "--target", target, "--value", "ten")
    client = run("examples/client.py", "--target", target, "--once", "max_connections")

    assert pushed.returncode == 0, pushed.stderr
    assert "pushed max_connections = 20" in pushed.stdout
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT: 'ten' is not an integer" in refused.stderr
    assert client.returncode == 0, client.stderr
    capabilities = "capabilities: app/limit (int), debug_enabled (bool), max_connections (int), rate_limit (int)"
    assert capabilities in client.stdout
    assert "sync: max_connections = 20 (int)" in client.stdout


def test_createtoken__grant__token_works_for_its_prefix_only(embedded):
    token = manage(embedded, "createtoken", "example-reader", "--grant", "max_=r").strip()
    target = f"127.0.0.1:{embedded['GRPC_PORT']}"

    with grpc.insecure_channel(target) as channel:
        stub = datastream_pb2_grpc.DataServiceStub(channel)
        meta = (("authorization", f"Bearer {token}"),)
        readable = stub.Sync(datastream_pb2.DataRequest(), metadata=meta, timeout=10)
        with pytest.raises(grpc.RpcError) as error:
            stub.Sync(datastream_pb2.DataRequest(keys=["rate_limit"]), metadata=meta, timeout=10)

    assert token.startswith("ds_")
    assert set(readable.data) == {"max_connections"}
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_stores_demo__git_and_bucket_mounted__served_beside_the_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env["DATASTREAM_VAR_DIR"] = str(tmp_path)
    http, grpc_port, s3 = free_port(), free_port(), free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            "examples/stores_demo.py",
            "--http",
            f"127.0.0.1:{http}",
            "--grpc",
            f"127.0.0.1:{grpc_port}",
            "--s3-port",
            str(s3),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", demo, timeout=60)
        keys = ["repo/service/limits.json", "repo/feature_flags.yaml", "bucket/banner.txt", "max_connections"]
        deadline = time.monotonic() + 30
        while True:
            try:
                data = http_json(f"http://127.0.0.1:{http}/api/v1/sync?keys={','.join(keys)}")["data"]
                break
            except OSError:  # the stores' first listing may still be running (503)
                assert time.monotonic() < deadline, "stores never served"
                time.sleep(0.3)
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=30)

    assert data["repo/service/limits.json"]["value"] == {"max_connections": 100, "timeout_ms": 2500}
    assert data["repo/feature_flags.yaml"]["value"] == {"new_checkout": True, "beta_users": ["alice", "bob"]}
    assert data["bucket/banner.txt"]["value"] == "All systems normal"
    assert data["max_connections"]["value"] == 10
