"""The subscriber worker processes, driven over JSON lines, with their answers merged."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import child_setup, pinned_child_setup

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """One ``python -m bench.worker`` child, on ``core`` or else on the harness's (client) core."""

    def __init__(self, index: int, logs: Path, core: int | None = None, name: str = "worker") -> None:
        self.index = index
        self.logs = logs
        self.core = core
        self.name = f"{name}-{index}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Spawn the worker in its own process group."""
        setup = child_setup if self.core is None else functools.partial(pinned_child_setup, self.core)
        with open(self.logs / f"{self.name}.log", "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.worker",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=1 << 28,
                start_new_session=True,
                preexec_fn=setup,
            )

    async def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait at most ``timeout`` seconds for its answer."""
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.name} exited; see {self.logs / f'{self.name}.log'}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    async def stop(self) -> None:
        """Ask the worker to exit, then kill its group if it lingers."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(Exception):
                process.stdin.write(b'{"op": "exit"}\n')
                await process.stdin.drain()
                process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 5)


def merge_errors(answers: list[dict[str, Any]]) -> dict[str, int]:
    """Sum the per-reason error counts of several answers."""
    total: Counter[str] = Counter()
    for answer in answers:
        total.update(answer.get("errors", {}))
    return dict(total)


class WorkerPool:
    """Spreads subscribers over worker processes, ``per_worker`` each, and merges their answers."""

    # With ``cores``, worker i is pinned to ``cores[i % len(cores)]`` and every open uses a multiple of
    # that many workers, so the subscribers are split evenly over those cores.
    def __init__(self, logs: Path, per_worker: int, *, cores: list[int] | None = None, name: str = "worker") -> None:
        self.logs = logs
        self.per_worker = per_worker
        self.cores = cores or []
        self.name = name
        self.workers: list[WorkerProcess] = []
        self.active: list[WorkerProcess] = []

    async def ensure(self, count: int) -> None:
        """Have at least ``count`` workers running."""
        while len(self.workers) < count:
            index = len(self.workers)
            core = self.cores[index % len(self.cores)] if self.cores else None
            worker = WorkerProcess(index, self.logs, core, self.name)
            await worker.start()
            self.workers.append(worker)

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers holding the current subscriptions."""
        return [w.process.pid for w in self.active if w.process is not None]

    async def _all(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.call(command, timeout) for w in self.active)))

    async def open(
        self,
        system: str,
        target: str | list[str],
        subs: list[list[str]],
        *,
        per_channel: int,
        limit: int,
        timeout: float,
    ) -> dict[str, Any]:
        """Open ``subs`` (one key list per subscriber) across the workers (worker i on target i mod len)."""
        targets = [target] if isinstance(target, str) else target
        count = max(1, -(-len(subs) // self.per_worker))
        # Equal shares per core (and so per target when targets follow cores).
        step = max(1, len(self.cores), len(targets))
        count = -(-count // step) * step
        await self.ensure(count)
        self.active = self.workers[:count]
        share = -(-len(subs) // count)
        start_ns = time.time_ns()
        answers = await asyncio.gather(
            *(
                w.call(
                    {
                        "op": "open",
                        "system": system,
                        "target": targets[i % len(targets)],
                        "subs": subs[i * share : (i + 1) * share],
                        "per_channel": per_channel,
                        "limit": max(1, limit // count),
                        "timeout": timeout,
                        "start_ns": start_ns,
                    },
                    timeout + 30,
                )
                for i, w in enumerate(self.active)
            )
        )
        return {"ready_ms": [t for a in answers for t in a["ready_ms"]], "errors": merge_errors(answers)}

    async def reconnect(self, start_ns: int, *, limit: int, timeout: float, resume: bool = False) -> dict[str, Any]:
        """Every worker drops all its connections and resubscribes at once (``resume``: from the revision held)."""
        answers = await self._all(
            {"op": "reconnect", "start_ns": start_ns, "limit": limit, "timeout": timeout, "resume": resume},
            timeout + 30,
        )
        return {
            "ready_ms": [t for a in answers for t in a["ready_ms"]],
            "errors": merge_errors(answers),
            "bytes": None if any(a.get("bytes") is None for a in answers) else sum(int(a["bytes"]) for a in answers),
        }

    async def drop(self) -> None:
        """Every worker closes all its streams, keeping what they held, until the next reconnect."""
        await self._all({"op": "drop"}, 120)

    async def reset(self) -> None:
        """Forget recorded receipts."""
        await self._all({"op": "reset"}, 60)

    async def wait(self, expect: dict[str, int], timeout: float) -> int:
        """Wait until every subscriber holds ``expect``; return how many (subscriber, key) still lag."""
        answers = await self._all({"op": "wait", "expect": expect, "timeout": timeout}, timeout + 30)
        return sum(int(a["lagging"]) for a in answers)

    async def collect(self, updates: list[tuple[str, int]]) -> dict[str, Any]:
        """Per update, every watching subscriber's delay (µs), merged over the workers."""
        answers = await self._all({"op": "collect", "updates": updates}, 120)
        merged: list[list[int]] = [[] for _ in updates]
        missing = [0 for _ in updates]
        for answer in answers:
            for i, delays in enumerate(answer["lat_us"]):
                merged[i].extend(delays)
            for i, lost in enumerate(answer["missing"]):
                missing[i] += lost
        received = sum(int(answer.get("received", 0)) for answer in answers)
        return {"lat_us": merged, "missing": missing, "received": received, "errors": merge_errors(answers)}

    async def close(self) -> dict[str, int]:
        """Close every subscription; return the stream errors seen before closing."""
        if not self.active:
            return {}
        answers = await self._all({"op": "close"}, 120)
        self.active = []
        return merge_errors(answers)

    async def stop(self) -> None:
        """Stop every worker process."""
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        self.workers = []
        self.active = []
