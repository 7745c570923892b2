"""The example scripts find the server where `make run` put it and say where they look."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_newcomer import ROOT, Command, clean_env, free_port, running_server, spawn, stop


@pytest.fixture
def server(tmp_path: Path):
    with running_server(tmp_path) as env:
        yield env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_client__nothing_listening__names_the_address_it_retries(tmp_path):
    port = free_port()
    client, output = spawn(
        [sys.executable, "examples/client.py", "--max-backoff", "0.2"], clean_env(GRPC_PORT=str(port))
    )
    try:
        output.wait_for(lambda text: text.count(f"reconnecting to 127.0.0.1:{port} in") >= 2, "two retries")
    finally:
        status = stop(client, signal.SIGINT)  # Ctrl-C, most likely while it waits to reconnect

    assert f"connecting to 127.0.0.1:{port}" in output.text
    assert "GRPC_PORT" in output.text  # the hint says how to point it elsewhere
    assert status == 0, output.text
    assert "Traceback" not in output.text


def test_updater__nothing_listening__names_the_address_it_tried(tmp_path):
    port = free_port()

    result = run(clean_env(), "examples/updater.py", "--address", f"127.0.0.1:{port}")

    assert result.returncode == 1
    assert "push failed: UNAVAILABLE" in result.stderr
    assert f"(server at 127.0.0.1:{port})" in result.stderr


def test_examples__grpc_port_from_environment__reach_the_server(server):
    pushed = run(server, "examples/updater.py", "--value", "21")
    client = run(server, "examples/client.py", "--once", "max_connections")

    assert pushed.returncode == 0, pushed.stderr
    assert f"pushed max_connections = 21 to 127.0.0.1:{server['GRPC_PORT']}" in pushed.stdout
    assert client.returncode == 0, client.stderr
    assert "sync: max_connections = 21 (int)" in client.stdout


def test_examples__address_settings__override_grpc_port_in_order(server):
    live = f"127.0.0.1:{server['GRPC_PORT']}"
    dead = str(free_port())

    by_env = run({**server, "GRPC_PORT": dead, "DATASTREAM_ADDRESS": live}, "examples/updater.py", "--value", "22")
    by_flag = run(
        {**server, "DATASTREAM_ADDRESS": f"127.0.0.1:{dead}"}, "examples/client.py", "--address", live, "--once"
    )
    by_old_flag = run({**server, "GRPC_PORT": dead}, "examples/updater.py", "--target", live, "--value", "23")

    assert by_env.returncode == 0, by_env.stderr
    assert f"to {live}" in by_env.stdout
    assert by_flag.returncode == 0, by_flag.stderr
    assert "update: max_connections = 22 (int)" in by_flag.stdout
    assert by_old_flag.returncode == 0, by_old_flag.stderr


def docstring_commands(script: Path) -> list[str]:
    """The indented shell lines of a script's docstring."""
    text = script.read_text()
    doc = text.split('"""')[1]
    return [line.strip() for line in doc.splitlines() if line.startswith("    ") and not line.strip().startswith("#")]


def sync(http_port: str, *keys: str) -> dict:
    url = f"http://127.0.0.1:{http_port}/api/v1/sync?keys={','.join(keys)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]


def test_stores_demo__env_ports_no_git_identity__docstring_commands_work(tmp_path):
    """`make run-stores` as a newcomer meets it: ports from the environment, S3 on a free port, no git identity."""
    home = tmp_path / "home"
    home.mkdir()
    var = tmp_path / "var"
    env = clean_env(
        DATASTREAM_VAR_DIR=str(var),
        HTTP_PORT=str(free_port()),
        GRPC_PORT=str(free_port()),
        HOME=str(home),
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
    )
    commands = docstring_commands(ROOT / "examples/stores_demo.py")
    client_line = next(c for c in commands if "examples/client.py" in c)
    commit_line = next(c for c in commands if "commit -am" in c)
    put_line = next(c for c in commands if "stores_demo.py put" in c)
    work = var / "demo/work"

    demo, output = spawn([sys.executable, "examples/stores_demo.py"], env)
    try:
        output.wait_for(lambda text: f"gRPC serving on 127.0.0.1:{env['GRPC_PORT']}" in text, "serve started")
        s3_port = (var / "demo/s3-port").read_text().strip()
        assert f"S3 bucket: demo-bucket at http://127.0.0.1:{s3_port}" in output.text
        client, watched = spawn(["bash", "-c", Command(client_line).shell()], env)
        try:
            watched.wait_for(
                lambda text: (
                    'update: repo/service/limits.json = {"max_connections":100' in text
                    and "update: bucket/banner.txt = All systems normal" in text
                ),
                "the demo's files and objects on the client",
            )
            limits = work / "service/limits.json"
            limits.write_text(limits.read_text().replace("100", "150"))
            committed = subprocess.run(
                ["bash", "-c", commit_line.replace("var/demo/work", str(work))],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert committed.returncode == 0, committed.stderr
            put = subprocess.run(
                ["bash", "-c", Command(put_line).shell()], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
            )
            assert put.returncode == 0, put.stderr
            watched.wait_for(
                lambda text: (
                    'update: repo/service/limits.json = {"max_connections":150' in text
                    and "update: bucket/banner.txt = maintenance tonight" in text
                ),
                "the pushed commit and the changed object on the client",
            )
        finally:
            stop(client, signal.SIGINT)
        served = sync(env["HTTP_PORT"], "repo/service/limits.json", "bucket/banner.txt")
    finally:
        status = stop(demo)

    assert f"connecting to 127.0.0.1:{env['GRPC_PORT']}" in watched.text
    assert served["repo/service/limits.json"]["value"]["max_connections"] == 150
    assert served["bucket/banner.txt"]["value"] == "maintenance tonight"
    assert status == 0, output.text
    assert not (var / "demo/s3-port").exists()  # the demo cleaned up: no stale port for `put`
