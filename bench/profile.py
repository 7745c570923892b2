"""Optional py-spy sampling of the datastream server, one profile per workload phase (--profile)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.procs import child_setup


def py_spy() -> str | None:
    """The py-spy binary next to this interpreter or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(pid: int | None, out: Path, *, rate: int = 250) -> Iterator[None]:
    """Record ``pid`` with py-spy (collapsed stacks, idle threads left out) while the block runs."""
    binary = py_spy()
    if pid is None or binary is None:
        yield
        return
    raw = out.with_suffix(".collapsed")
    with open(out.with_suffix(".log"), "ab") as log:
        recorder = subprocess.Popen(
            # --native shows the C side (syscalls, the garbage collector, gRPC's Cython core); --threads
            # lets the summary keep the event loop's thread apart from idle pool threads.
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--native",
                "--threads",
                "--format",
                "raw",
                "-o",
                str(raw),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_setup,
        )
    try:
        yield
    finally:
        # py-spy writes its output when interrupted.
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(5)
        if raw.exists():
            out.with_suffix(".txt").write_text(summarize(raw))


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (dir/file.py)": lines differ per call site.
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    if name.startswith("0x"):
        # Unsymbolised addresses: name the library only.
        return f"[native {Path(file).name.split('.')[0]}]"
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{name} ({short})"


# A stack holding one of these frames is a thread waiting, not working: py-spy cannot tell here.
WAITING = (
    "_queue_SimpleQueue_get",
    "Condition.wait",
    "epoll_wait",
    "select_epoll_poll",
    "PyThread_acquire_lock_timed",
    "lock_PyThread_acquire_lock",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "sem_wait",
    "time_sleep",
)


def summarize(raw: Path, top: int = 45) -> str:
    """The busiest threads and functions (inclusive and self) from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    busy = 0
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if any(wait in frame for frame in frames for wait in WAITING):
            continue
        busy += count
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        loop = any("run_forever" in f for f in frames)
        threads["event loop (" + thread + ")" if loop else thread] += count
        names = [_frame_name(f) for f in frames if not f.startswith(("process ", "thread "))]
        for name in set(names):
            inclusive[name] += count
        if names:
            own[names[-1]] += count
    if not busy:
        return f"{total} samples, all waiting\n"
    lines = [f"{total} samples, {busy} busy (not waiting on a lock, a queue or epoll); shares are of busy samples", ""]
    lines += ["threads:"] + [f"  {100 * c / busy:5.1f}%  {name}" for name, c in threads.most_common(8)]
    lines += ["", "inclusive:"] + [f"  {100 * c / busy:5.1f}%  {name}" for name, c in inclusive.most_common(top)]
    lines += ["", "self:"] + [f"  {100 * c / busy:5.1f}%  {name}" for name, c in own.most_common(top)]
    return "\n".join(lines) + "\n"
