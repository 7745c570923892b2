"""Throwaway PostgreSQL and Redis servers on loopback for the production test profile and fault tests.

Each server lives in its own temporary directory, listens on 127.0.0.1 on a
port fixed at construction (so ``stop()`` then ``start()`` restarts it where
clients expect it) and is removed with its data by ``close()``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import psycopg
from psycopg.rows import TupleRow

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ServerError(RuntimeError):
    """A server could not be found, started or stopped."""


class BinaryNotFound(ServerError):
    """A server binary is not installed."""


def in_ci() -> bool:
    """Whether this runs in CI, where a missing server is a failure rather than a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_binary(name: str) -> str:
    """Path of ``name`` on PATH or, for PostgreSQL (Debian keeps it off PATH), in /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    if name.startswith("redis"):
        raise BinaryNotFound(f"{name} not found on PATH (Debian: apt-get install redis-server)")

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True):
        if os.access(candidate, os.X_OK):
            return candidate
    raise BinaryNotFound(
        f"{name} not found on PATH or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)"
    )


def skip_unless_installed(exc: BinaryNotFound) -> NoReturn:
    """End a test whose server is not installed: a failure in CI, where every test must run, else a skip."""
    import pytest

    if in_ci():
        pytest.fail(f"{exc}; CI must run every test", pytrace=False)
    pytest.skip(str(exc))


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(command: list[str], sig: signal.Signals) -> list[str]:
    """``command`` prefixed so that it gets ``sig`` when the starting thread dies (Linux only)."""
    setpriv = shutil.which("setpriv")
    # The signal fires when the *thread* that started the server ends, so only
    # the main thread asks for it; a killed test run then leaves no server behind.
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return command
    # setpriv runs after the user switch (which would clear the setting) and execs in place.
    return [setpriv, f"--pdeathsig={sig.name.removeprefix('SIG')}", "--", *command]


class _Server:
    """Start/stop/restart plumbing shared by the test servers (these two and tests/s3server.py's)."""

    name = "server"
    stop_signal = signal.SIGTERM
    parent_death_signal = signal.SIGTERM

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        # A port picked here may be taken before the server binds it; only then may start() pick another.
        self._port_movable = port is None
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix=f"datastream-{self.name}-"))
        self.log_path = self.dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.user: str | None = None

    # Lifecycle

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it accepts connections."""
        if self.running:
            return
        self._prepare()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                _die_with_parent(self._command(), self.parent_death_signal),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                user=self.user,
                # Its own session: a Ctrl-C meant for pytest must not stop the
                # server under it; stop() does that, in order.
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                self.process = None
                if self._port_movable and "already in use" in self.log_tail(5):
                    self.port = free_port()
                    self.start()
                    return
                raise ServerError(f"{self.name} exited at start:\n{self.log_tail()}")
            if self._ready():
                self._port_movable = False
                self._started()
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"{self.name} did not accept connections in {START_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Shut down cleanly and wait for the process to exit; the data stays for a restart."""
        self._signal_and_wait(self.stop_signal)

    def kill(self) -> None:
        """Kill the process at once, like a crash; the data stays for a restart."""
        self._signal_and_wait(signal.SIGKILL)

    def close(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

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

    # Per server

    def _prepare(self) -> None:
        """Create what the first start needs (idempotent)."""

    def _started(self) -> None:
        """Set up what needs the running server (idempotent)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _signal_and_wait(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ServerError(f"{self.name} ignored signal {sig} for {STOP_TIMEOUT:.0f}s; killed it") from None


class PostgresServer(_Server):
    """A PostgreSQL cluster tuned for tests (no fsync), superuser ``datastream``, database ``datastream``."""

    name = "postgres"
    # Fast shutdown: roll back open transactions and disconnect clients now.
    stop_signal = signal.SIGINT
    # Immediate shutdown: the postmaster still reaps its backends and shared memory.
    parent_death_signal = signal.SIGQUIT

    superuser = "datastream"
    database = "datastream"

    def __init__(self, *, port: int | None = None) -> None:
        self.postgres = find_binary("postgres")
        # The initdb of the same installation: a cluster only runs under its own major version.
        sibling = Path(self.postgres).with_name("initdb")
        self.initdb = str(sibling) if os.access(sibling, os.X_OK) else find_binary("initdb")
        super().__init__(port=port)
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "sockets"
        self.user = _unprivileged_user()
        self._initialised = False

    @property
    def url(self) -> str:
        """DATABASE_URL for the ``datastream`` database."""
        return f"postgres://{self.superuser}@{self.host}:{self.port}/{self.database}"

    def _prepare(self) -> None:
        if self._initialised:
            return
        self.socket_dir.mkdir(exist_ok=True)
        if self.user is not None:
            # PostgreSQL refuses to run as root; the unprivileged user owns everything it writes.
            entry = pwd.getpwnam(self.user)
            for path in (self.dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [
                self.initdb,
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.superuser,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            user=self.user,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(f"initdb failed ({result.returncode}):\n{output}")
        self._initialised = True

    def _command(self) -> list[str]:
        return [
            self.postgres,
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={self.host}",
            # Durability is worthless for a database that dies with the test run.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]

    def _connect(self) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.superuser, dbname="postgres", autocommit=True, connect_timeout=2
        )

    def _ready(self) -> bool:
        try:
            with self._connect() as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.OperationalError:
            return False
        # Another run's server may have won the port race: only ours counts.
        return row is not None and os.path.realpath(row[0]) == os.path.realpath(self.data_dir)

    def _started(self) -> None:
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')


class RedisServer(_Server):
    """A Redis server without persistence."""

    name = "redis"

    def __init__(self, *, port: int | None = None) -> None:
        self.redis_server = find_binary("redis-server")
        super().__init__(port=port)

    @property
    def url(self) -> str:
        """REDIS_URL for database 0."""
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self.redis_server,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
        ]

    def _ready(self) -> bool:
        # Another run's server may have won the port race: only the one serving our directory counts.
        ours = os.path.realpath(self.dir).encode()
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"CONFIG GET dir\r\n")
                reply = b""
                while reply.count(b"\r\n") < 5 and not reply.startswith(b"-"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return b"\r\n" + ours + b"\r\n" in reply


def _unprivileged_user() -> str | None:
    """The user to run PostgreSQL as: None unless running as root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServerError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")
