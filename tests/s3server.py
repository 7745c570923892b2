"""A real S3-compatible HTTP server for tests: moto's server mode as a subprocess on a loopback port.

The port is fixed at construction, so ``stop()`` then ``start()`` brings the
server back where clients expect it (with an empty state: moto keeps its
buckets in memory). ``client()`` is a boto3 client of that server, playing
"another program" that changes the bucket.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
from botocore.config import Config

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
ACCESS_KEY = "datastream-test"
SECRET_KEY = "datastream-test-secret"
REGION = "us-east-1"

try:
    # Looked up here, not in the child: between fork and exec only the call itself should run.
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except AttributeError:  # not Linux
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the test process is killed, the server goes too instead of holding its port.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3ServerError(RuntimeError):
    """The server could not be started."""


class S3Server:
    """moto's S3-compatible server on 127.0.0.1:``port``; restartable on the same port."""

    def __init__(self, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="datastream-s3-"))
        self.log_path = self.dir / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        """The URL a client's ``endpoint_url`` takes."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers HTTP."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                # Its own session: a Ctrl-C meant for pytest must not stop it under a test.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                self.process = None
                raise S3ServerError(f"moto server exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise S3ServerError(f"moto server did not answer in {START_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and wait until its port is closed; its buckets are lost."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server, close the client and delete the server's directory."""
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        with contextlib.suppress(OSError):
            self.log_path.unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def client(self) -> Any:
        """A boto3 S3 client of this server, independent of any store's (one per server: building one takes 0.1s)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        ).client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 2, "mode": "standard"},
                request_checksum_calculation="when_required",
                max_pool_connections=16,
            ),
        )

    def options(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """S3Store OPTIONS for ``bucket`` on this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "bucket": bucket,
            **extra,
        }

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return sock.recv(12).startswith(b"HTTP/")
        except OSError:
            return False

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
