"""Process plumbing: free ports, pinned child processes in their own groups, /proc readings."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

SERVER_CORE = 0
CLIENT_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The cores this process may use, read once at import: after pin_self_to_client_core() the harness's own
# affinity is the client core alone, and asking it then would say there is nothing to pin to.
MACHINE_CORES: frozenset[int] = frozenset(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())


def can_pin() -> bool:
    """Whether there are two cores (the server and the client core) to split between server and clients."""
    return (
        hasattr(os, "sched_setaffinity")
        and {SERVER_CORE, CLIENT_CORE} <= MACHINE_CORES
        and shutil.which("taskset") is not None
    )


def pin_self_to_client_core() -> bool:
    """Pin this process (and so every client it spawns) to the client core."""
    if not can_pin():
        return False
    os.sched_setaffinity(0, {CLIENT_CORE})
    return True


def all_cores() -> str:
    """Every core this process was allowed at start, as a taskset list ("0,1")."""
    return ",".join(str(core) for core in sorted(MACHINE_CORES)) or "0"


@contextlib.contextmanager
def unpinned() -> Iterator[None]:
    """Let the calling thread (and children started meanwhile) run on every core for the block."""
    if not hasattr(os, "sched_setaffinity") or not MACHINE_CORES:
        yield
        return
    before = os.sched_getaffinity(0)
    # Children inherit the affinity of the thread that starts them; the harness's is the client core.
    os.sched_setaffinity(0, MACHINE_CORES)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def child_setup() -> None:
    # If the harness dies (even by SIGKILL) its servers and workers go too.
    with contextlib.suppress(AttributeError):
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pinned_child_setup(core: int) -> None:
    """child_setup, then pin the child to ``core`` (before it execs, so nothing runs elsewhere)."""
    child_setup()
    if can_pin():
        os.sched_setaffinity(0, {core})


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    core: int | str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, pinned to ``core`` (a taskset list) via taskset, output to ``log``."""
    # With ``core`` None the child inherits the harness's affinity (the client core once it pinned itself).
    command = list(argv)
    if core is not None and can_pin():
        # taskset execs the command, so the pid stays the server's own.
        command = ["taskset", "-c", str(core), *command]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=child_setup,
        )


def stop_group(process: subprocess.Popen[bytes] | None, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; never raises."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
    # Stragglers in the group (a worker thread's child, say) go as well.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; fields resume after its closing paren.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/<pid>/statm."""
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * PAGE_SIZE


class CpuMeter:
    """CPU seconds one or more processes used between start() and stop(), summed, with the wall time."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self._cpu0: list[float] = []
        self._wall0 = 0.0
        self.per_pid: list[float] = [0.0 for _ in pids]
        self.cpu = 0.0
        self.wall = 0.0

    def start(self) -> CpuMeter:
        """Take the starting reading."""
        self._cpu0 = [cpu_seconds(pid) for pid in self.pids]
        self._wall0 = time.monotonic()
        return self

    def stop(self) -> CpuMeter:
        """Take the final reading."""
        self.per_pid = [cpu_seconds(pid) - before for pid, before in zip(self.pids, self._cpu0, strict=True)]
        self.cpu = sum(self.per_pid)
        self.wall = time.monotonic() - self._wall0
        return self

    @property
    def utilisation(self) -> float:
        """Cores' worth of CPU the processes used over the window (one process: its share of a core)."""
        return self.cpu / self.wall if self.wall > 0 else 0.0

    @property
    def busiest(self) -> float:
        """Share of one core the busiest of the processes used over the window."""
        return max(self.per_pid, default=0.0) / self.wall if self.wall > 0 else 0.0


def core_times() -> dict[int, tuple[int, int]]:
    """Per core, (busy, total) ticks since boot from /proc/stat (iowait counts as idle)."""
    times: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(f) for f in fields[:8]]
        idle = ticks[3] + ticks[4]
        times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times


class CoreMeter:
    """How busy each core was between start() and stop(), whoever kept it busy (other users included)."""

    def __init__(self) -> None:
        self._before: dict[int, tuple[int, int]] = {}
        self.busy: dict[int, float] = {}

    def start(self) -> CoreMeter:
        """Take the starting reading."""
        self._before = core_times()
        return self

    def stop(self) -> CoreMeter:
        """Take the final reading."""
        after = core_times()
        self.busy = {}
        for core, (busy, total) in after.items():
            busy0, total0 = self._before.get(core, (busy, total))
            self.busy[core] = (busy - busy0) / (total - total0) if total > total0 else 0.0
        return self
