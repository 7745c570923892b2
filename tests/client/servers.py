"""A `manage.py grpcrunserver` subprocess on a fixed free port, to kill and restart; helpers for client tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


def eventually(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s")
        time.sleep(0.02)


class GrpcServer:
    """The embedded profile (SQLite in ``var_dir``, demo settings) served by `manage.py grpcrunserver`."""

    def __init__(self, var_dir: Path) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
        }
        self.env.update(DATASTREAM_VAR_DIR=str(var_dir), GRPC_PORT=str(self.port))
        self.log = var_dir / "grpc.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("bootstrap")

    def manage(self, *args: str) -> str:
        """Run a manage.py command against the same database; its stdout."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self) -> None:
        """Start serving on the port and wait until it accepts connections."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "grpcrunserver", self.target, "--grace", "1"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process

        def accepting() -> bool:
            assert process.poll() is None, self.log.read_text(errors="replace")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        eventually(accepting, f"grpcrunserver on {self.target} accepting")

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=TIMEOUT)
        self.process = None

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=TIMEOUT)
        self.process = None
