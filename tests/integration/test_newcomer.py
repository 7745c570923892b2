"""A newcomer's first hour: the README's commands, as written, against a fresh database and a live server.

The commands are read from README.md, so the README cannot drift from what works. A
comment line ``#   text`` under a command is a whole line of the output it promises
(``...`` stands for anything); each one is checked. The server runs on free ports, never the defaults, so a
command that ignores ``HTTP_PORT``/``GRPC_PORT`` fails here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Variables of the caller's shell that would change what the README's commands do.
UNSET = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "HTTP_HOST", "GRPC_HOST", "S3_PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new terminal on this machine, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith("DATASTREAM_")}
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class Output:
    """A process's merged stdout and stderr, collected by a thread; waits are on lines arriving."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.text += line
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 60.0) -> None:
        """Until ``predicate(text)`` holds; fails on exit or after ``timeout`` (a guard, not the measure)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.text):
                remaining = deadline - time.monotonic()
                assert self.process.poll() is None or self._thread.is_alive(), f"exited before {what}:\n{self.text}"
                assert remaining > 0, f"no {what} in {timeout:.0f}s:\n{self.text}"
                self._changed.wait(min(remaining, 1.0))


def spawn(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], Output]:
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    return process, Output(process)


def stop(process: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> int:
    """Signal the process group and wait for the process."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)


@contextlib.contextmanager
def running_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """What `make run` does (migrate, bootstrap, serve) on an empty var dir and free, non-default ports."""
    var = tmp_path / "var"
    var.mkdir()
    env = clean_env(DATASTREAM_VAR_DIR=str(var), HTTP_PORT=str(free_port()), GRPC_PORT=str(free_port()))
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "bootstrap")
    process, output = spawn([sys.executable, "manage.py", "serve"], env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, output.text
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{env['HTTP_PORT']}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, f"serve not ready in 60s:\n{output.text}"
                time.sleep(0.1)
        yield env
    finally:
        assert stop(process) == 0, output.text


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    with running_server(tmp_path) as env:
        yield env


# The README


@dataclass
class Command:
    """One shell command of a README block and the output lines it promises."""

    text: str
    expected: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The command as written; only when this checkout has no .venv is its interpreter the test's own."""
        if (ROOT / ".venv/bin/python").exists():
            return self.text
        return self.text.replace(".venv/bin/python", shlex.quote(sys.executable))

    def check(self, output: str) -> None:
        for line in self.expected:
            pattern = "^" + ".*".join(re.escape(part) for part in line.split("...")) + "$"
            assert re.search(pattern, output, flags=re.M), f"{self.text!r} should print {line!r}; it printed:\n{output}"


def sh_block(heading: str, containing: str) -> list[Command]:
    """The commands of the first ```sh block under ``heading`` that contains ``containing``."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    blocks = re.findall(r"^```sh\n(.*?)^```", text[start:], flags=re.S | re.M)
    block = next(b for b in blocks if containing in b)
    commands: list[Command] = []
    continued: str | None = None
    for line in block.splitlines():
        if continued is not None:
            continued += "\n" + line
            if not line.endswith("\\"):
                commands.append(Command(continued))
                continued = None
        elif line.startswith("#   "):
            commands[-1].expected.append(line[4:].strip())
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        elif line.endswith("\\"):
            continued = line
        else:
            commands.append(Command(line))
    assert commands, f"no commands under {heading}"
    return commands


def run_in_one_shell(commands: list[Command], env: dict[str, str]) -> list[tuple[int, str]]:
    """Each command in turn in one bash (so ``export`` carries over): its exit status and output."""
    # curl's output has no final newline: the marker starts a line of its own.
    script = "".join(f"{{\n{c.shell()}\n}} 2>&1; printf '\\n@@@ %s\\n' $?\n" for c in commands)
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    parts = re.split(r"\n@@@ (\d+)\n", result.stdout)
    outputs = [(int(parts[i + 1]), parts[i]) for i in range(0, len(parts) - 1, 2)]
    assert len(outputs) == len(commands), result.stdout + result.stderr
    return outputs


def test_readme_tour__non_default_ports__client_sees_the_pushes_and_every_line_works(server):
    commands = sh_block("## A 60-second tour", "examples/client.py")
    watcher, *rest = commands
    assert "examples/client.py" in watcher.text and "--once" not in watcher.text
    assert any("curl" in c.text for c in rest) and any("updater.py" in c.text for c in rest)

    client, output = spawn(["bash", "-c", watcher.shell()], server)
    try:
        output.wait_for(lambda text: "update: max_connections = 10 (int)" in text, "client subscribed")
        results = run_in_one_shell(rest, server)
        output.wait_for(
            lambda text: "update: max_connections = 20 (int)" in text and "update: rate_limit = 250 (int)" in text,
            "the tour's gRPC and REST pushes on the client",
        )
    finally:
        stop(client, signal.SIGINT)

    watcher.check(output.text)
    assert f"connecting to 127.0.0.1:{server['GRPC_PORT']}" in output.text
    for command, (status, text) in zip(rest, results, strict=True):
        command.check(text)
        refused = "--value ten" in command.text
        assert status == (1 if refused else 0), f"{command.text!r} exited {status}:\n{text}"


def test_readme_token_example__fresh_install__works_as_written(server):
    commands = sh_block("### Access", "createtoken")
    assert "createtoken" in commands[0].text
    assert any(c.expected for c in commands)

    results = run_in_one_shell(commands, server)

    for command, (status, text) in zip(commands, results, strict=True):
        command.check(text)
        denied = any("PERMISSION_DENIED" in line for line in command.expected)
        assert status == (1 if denied else 0), f"{command.text!r} exited {status}:\n{text}"
    tokens = manage(
        server, "shell", "-c", "from datastream_app.models import ApiToken; print(ApiToken.objects.count())"
    )
    assert tokens.strip().splitlines()[-1] == "1"  # the one createtoken made, and the commands used it


# `make run` installs the runtime only; `make test` the development toolchain too


@pytest.fixture
def stub_checkout(tmp_path: Path) -> Callable[[str], list[str]]:
    """The Makefile and requirement files with a .venv whose python only logs its arguments; runs a target."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed; the project's entry points need it", pytrace=False)
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/../calls"\n')
    python.chmod(0o755)
    calls = tmp_path / ".venv/calls"

    def make(target: str) -> list[str]:
        calls.write_text("")
        result = subprocess.run(["make", "-s", target], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return calls.read_text().splitlines()

    return make


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("-m pip install") and "--upgrade pip" not in call]


def test_make_run__fresh_venv__installs_the_runtime_requirements_only(stub_checkout):
    calls = stub_checkout("run")

    assert installs(calls) == ["-m pip install --quiet -r requirements.txt"]
    assert calls[-3:] == ["manage.py migrate --noinput -v 0", "manage.py bootstrap", "manage.py serve"]


def test_make_test_after_run__installs_dev_requirements__then_run_installs_nothing(stub_checkout):
    stub_checkout("run")

    tests = stub_checkout("test-fast")
    again = stub_checkout("run")

    assert installs(tests) == ["-m pip install --quiet -r requirements-dev.txt"]
    assert installs(again) == []


def test_make_run_after_test__installs_nothing(stub_checkout):
    first = stub_checkout("test-fast")

    run = stub_checkout("run")

    assert installs(first) == ["-m pip install --quiet -r requirements-dev.txt"]
    assert installs(run) == []
    assert run[-1] == "manage.py serve"


def test_make_run_stores__installs_the_runtime_and_moto_only(stub_checkout):
    calls = stub_checkout("run-stores")

    pin = next(line for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if line.startswith("moto"))
    assert installs(calls) == ["-m pip install --quiet -r requirements.txt", f"-m pip install --quiet {pin}"]
    assert calls[-1] == "examples/stores_demo.py"
