"""The servers under test: datastream's embedded profile, a single-member etcd and the bare grpc.aio floor."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.clients import AdminSave, EtcdClient, HttpClient, OursClient
from bench.common import ALL_KEYS, ETCD, FLOOR, HOT_KEY, OURS
from bench.procs import SERVER_CORE, free_port, spawn, stop_group

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
# The admin user the harness creates in its throwaway database.
ADMIN_USER = "bench"
ADMIN_PASSWORD = "bench-admin-password"


def memory_dir(prefix: str) -> Path:
    """A fresh directory in /dev/shm (tmpfs), or the temp dir where there is none."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class Server:
    """A server process the harness starts, measures and stops."""

    name = "server"
    # Whose client code drives it (the subscriber workers' protocol): OURS or ETCD.
    protocol = OURS

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_target = ""
        self.http_port = 0

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs it, so this is the server itself)."""
        assert self.process is not None
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """The processes whose CPU counts as the server's."""
        return [self.pid]

    def client(self) -> OursClient | EtcdClient:
        """A gRPC client for pushes and reads."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Create the data the benchmark needs before the first start."""

    async def start(self) -> None:
        """Start on fresh loopback ports, pinned to the server core, and wait until it answers."""
        raise NotImplementedError

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
            try:
                if await self._answers():
                    return
            except Exception as error:  # not up yet
                last = error
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {START_TIMEOUT:.0f}s ({last}); see {self.log_path}")

    async def _answers(self) -> bool:
        """Whether a gRPC read and the HTTP health path both answer."""
        client = self.client()
        try:
            await asyncio.wait_for(client.sync([HOT_KEY] if self.protocol == OURS else [ALL_KEYS[1]]), 2.0)
        finally:
            await client.close()
        http = HttpClient("127.0.0.1", self.http_port)
        try:
            status, _ = await asyncio.wait_for(http.request("GET", self.health_path), 2.0)
        finally:
            await http.close()
        return status == 200

    health_path = "/"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.logs / f"{self.name}.log"

    def stop(self) -> None:
        """Stop the process group; never raises."""
        stop_group(self.process)
        self.process = None

    def cleanup(self) -> None:
        """Stop and delete the data."""
        self.stop()


class Datastream(Server):
    """``manage.py serve`` on a temporary SQLite file: HTTP and gRPC in one process."""

    name = OURS
    health_path = "/api/v1/sync?keys=" + HOT_KEY

    def __init__(self, logs: Path) -> None:
        super().__init__(logs)
        self.var_dir = memory_dir("datastream-bench-")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "GRPC_ENABLE_FORK_SUPPORT"}
        }
        self.env["DATASTREAM_VAR_DIR"] = str(self.var_dir)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.pks: dict[str, int] = {}

    def prepare(self) -> None:
        """Migrate the empty database, create the benchmark keys and an admin user for the admin-save figure."""
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
        for argv in (
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            [sys.executable, "-m", "bench.seed"],
            [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", ""],
        ):
            with open(self.log_path, "ab") as log:
                subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=180)
        found = subprocess.run(
            [sys.executable, "-m", "bench.seed", "--print-pk", HOT_KEY],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        self.pks = {HOT_KEY: int(found.stdout.split()[-1])}

    def admin(self) -> AdminSave:
        """An operator's admin session on this server."""
        return AdminSave("127.0.0.1", self.http_port, ADMIN_USER, ADMIN_PASSWORD, self.pks)

    async def start(self) -> None:
        """Serve on fresh loopback ports, pinned to the server core, and wait until both answer."""
        self.http_port, grpc_port = free_port(), free_port()
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        argv = [
            sys.executable,
            "manage.py",
            "serve",
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--grpc",
            self.grpc_target,
            "--grace",
            "2",
        ]
        self.process = spawn(argv, log=self.log_path, env=self.env, cwd=ROOT, core=SERVER_CORE)
        await self._wait_ready()

    def client(self) -> OursClient:
        """A datastream gRPC client."""
        return OursClient(self.grpc_target)

    def cleanup(self) -> None:
        """Stop and delete the database."""
        super().cleanup()
        shutil.rmtree(self.var_dir, ignore_errors=True)

    @staticmethod
    def version() -> str:
        """The package versions that matter for the numbers."""
        from importlib.metadata import version

        names = ["Django", "channels", "grpcio", "protobuf", "uvicorn", "uvloop"]
        found = []
        for name in names:
            try:
                found.append(f"{name} {version(name)}")
            except Exception:  # not installed
                continue
        return ", ".join(found)


class Etcd(Server):
    """A single etcd member on loopback with its data in tmpfs."""

    name = ETCD
    protocol = ETCD
    health_path = "/health"

    def __init__(self, logs: Path) -> None:
        super().__init__(logs)
        self.data_dir = memory_dir("etcd-bench-")
        self.binary = ensure_etcd(logs)
        self.peer_port = 0
        self.seeded = False

    def prepare(self) -> None:
        """Nothing before the first start: keys are put once it runs."""

    async def start(self) -> None:
        """Start the member on fresh ports, pinned to the server core; put the keys the first time."""
        self.http_port, self.peer_port = free_port(), free_port()
        self.grpc_target = f"127.0.0.1:{self.http_port}"
        client_url = f"http://{self.grpc_target}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            "--name",
            "bench",
            "--data-dir",
            str(self.data_dir / "member"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"bench={peer_url}",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        if self.supports("--unsafe-no-fsync"):
            argv.append("--unsafe-no-fsync")
        self.process = spawn(argv, log=self.log_path, cwd=self.data_dir, core=SERVER_CORE)
        await self._wait_ready_after_seed()

    async def _wait_ready_after_seed(self) -> None:
        if not self.seeded:
            deadline = time.monotonic() + START_TIMEOUT
            client = self.client()
            try:
                while True:
                    try:
                        await asyncio.wait_for(client.push(ALL_KEYS[0], 0), 2.0)
                        break
                    except Exception:
                        if time.monotonic() > deadline or self.process is None or self.process.poll() is not None:
                            raise
                        await asyncio.sleep(0.1)
                await asyncio.gather(*(client.push(key, 0) for key in ALL_KEYS))
            finally:
                await client.close()
            self.seeded = True
        await self._wait_ready()

    def supports(self, flag: str) -> bool:
        """Whether this etcd knows ``flag`` (--unsafe-no-fsync came with 3.5)."""
        help_text = subprocess.run([self.binary, "--help"], capture_output=True, text=True, timeout=30)
        return flag in help_text.stdout + help_text.stderr

    def client(self) -> EtcdClient:
        """An etcd gRPC client."""
        return EtcdClient(self.grpc_target)

    def cleanup(self) -> None:
        """Stop and delete the data directory."""
        super().cleanup()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def version(self) -> str:
        """etcd's own version line."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"etcd Version:\s*(\S+)", out)
        return f"etcd {match.group(1) if match else 'unknown'}"


class Floor(Server):
    """``python -m bench.floor``: a bare grpc.aio fan-out server on datastream's wire protocol, no Django."""

    name = FLOOR
    protocol = OURS

    def __init__(self, logs: Path) -> None:
        super().__init__(logs)
        # datastream's environment, so only the server code differs.
        self.env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
        self.env["PYTHONUNBUFFERED"] = "1"

    async def start(self) -> None:
        """Serve on a fresh loopback port, pinned to the server core, and wait until Sync answers."""
        port = free_port()
        self.grpc_target = f"127.0.0.1:{port}"
        argv = [sys.executable, "-m", "bench.floor", "--port", str(port), "--grace", "2"]
        self.process = spawn(argv, log=self.log_path, env=self.env, cwd=ROOT, core=SERVER_CORE)
        await self._wait_ready()

    async def _answers(self) -> bool:
        # No HTTP side: a Sync of the hot key answering is readiness.
        client = self.client()
        try:
            return await asyncio.wait_for(client.sync([HOT_KEY]), 2.0) == 1
        finally:
            await client.close()

    def client(self) -> OursClient:
        """A datastream gRPC client: the floor speaks the same protocol."""
        return OursClient(self.grpc_target)


def ensure_etcd(logs: Path) -> str:
    """The etcd binary, installing Debian's etcd-server with apt-get when it is missing."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if found:
        return found
    print("etcd not found: installing Debian's etcd-server with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(logs / "apt.log", "ab") as log:
        subprocess.run(["apt-get", "update", "-qq"], stdout=log, stderr=subprocess.STDOUT, env=env, timeout=180)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "etcd-server"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=240,
            check=True,
        )
    found = shutil.which("etcd")
    if not found:
        raise RuntimeError(f"etcd-server installed but no etcd binary on PATH; see {logs / 'apt.log'}")
    return found
