"""The benchmark run: datastream against etcd and the bare grpc.aio floor on one machine, then scale-out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from bench import report
from bench.clients import AdminSave, OursClient, Pusher, RestSync
from bench.common import ETCD, FLOOR, HOT_KEY, KEYS, OURS, percentile
from bench.pool import WorkerPool
from bench.procs import CLIENT_CORE, SERVER_CORE, CoreMeter, CpuMeter, pin_self_to_client_core, rss_bytes
from bench.production import PRODUCTION, Production, missing_servers
from bench.profile import py_spy, sampled
from bench.systems import ROOT, Datastream, Etcd, Floor, Server

RESULTS = ROOT / "bench" / "results"


@dataclass
class Plan:
    """What to run and how long each part may take."""

    sizes: list[int]
    optional_sizes: list[int]
    a_updates: int = 20
    a_interval: float = 0.2
    # Admin saves at loaded_size subscribers, a_interval apart.
    admin_updates: int = 10
    # Workload (a) at loaded_size subscribers with one connection each.
    a1_updates: int = 10
    b_updates: int = 200
    b_interval: float = 0.02
    b_keys: int = 10
    per_channel: int = 100
    per_worker: int = 2500
    open_limit: int = 500
    push_seconds: float = 3.0
    push_concurrency: int = 8
    sync_seconds: float = 2.0
    sync_concurrency: int = 8
    loaded_size: int = 1000
    # The reconnect storm again with every subscriber on storm_keys keys (what a client on every key its token
    # reads holds), storm_changes of them changed while the subscribers were away, at each of storm_sizes.
    storm_sizes: list[int] = field(default_factory=lambda: [1000, 10000])
    storm_keys: int = 100
    storm_changes: int = 10
    # Workload (a) on the production profile with 1 and 2 gRPC processes, fresh ones for every round.
    production_sizes: list[int] = field(default_factory=lambda: [1000, 10000])
    production_procs: list[int] = field(default_factory=lambda: [1, 2])
    production_rounds: int = 2
    # Seconds this process may take; `make bench` adds its installs on top and must end within 10 minutes.
    budget: float = 530.0
    quick: bool = False
    profile: bool = False
    seed: int = 20240601
    notes: list[str] = field(default_factory=list)


def make_plan(quick: bool) -> Plan:
    """The full plan, or the smoke-run plan for --quick."""
    if quick:
        return Plan(
            sizes=[100],
            optional_sizes=[],
            a_updates=5,
            admin_updates=3,
            a1_updates=3,
            b_updates=30,
            push_seconds=1.0,
            sync_seconds=0.7,
            loaded_size=100,
            storm_sizes=[100],
            # PostgreSQL, Redis, a migration and fresh gRPC processes per round do not fit a smoke run's minute.
            production_sizes=[],
            budget=55.0,
            quick=True,
        )
    return Plan(sizes=[100, 1000], optional_sizes=[10000])


class OutOfTime(Exception):
    """The run's time budget is spent."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop, clean up, report what was measured."""


class Run:
    """Holds the servers, the worker pool, the clock and the results."""

    def __init__(self, plan: Plan, logs: Path) -> None:
        self.plan = plan
        self.logs = logs
        self.started = time.monotonic()
        self.deadline = self.started + plan.budget
        self.pool = WorkerPool(logs, plan.per_worker)
        # Scale-out subscribers: worker i on core i % 2, so half the streams are read on each core.
        self.spread_pool = WorkerPool(logs, plan.per_worker, cores=[SERVER_CORE, CLIENT_CORE], name="spread")
        self.results: dict[str, Any] = {OURS: {}, ETCD: {}, FLOOR: {}, PRODUCTION: {}, "storm": {OURS: {}, ETCD: {}}}
        self.interrupted = False

    def phase(self, server: Server, n: int, name: str) -> contextlib.AbstractContextManager[None]:
        """py-spy sampling of the datastream (or floor) server for one phase when --profile is on."""
        if not self.plan.profile or server.name not in (OURS, FLOOR) or server.process is None:
            return contextlib.nullcontext()
        prefix = "" if server.name == OURS else f"{server.name}-"
        return sampled(server.pid, self.logs / f"py-spy-{prefix}N{n}-{name}")

    @contextlib.contextmanager
    def sample_all(self, pids: list[int], name: str) -> Iterator[None]:
        """py-spy sampling of several server processes for one phase when --profile is on."""
        with contextlib.ExitStack() as stack:
            if self.plan.profile:
                for index, pid in enumerate(pids):
                    stack.enter_context(sampled(pid, self.logs / f"py-spy-{name}-grpc{index}"))
            yield

    async def step(self, server: Server, n: int, what: str, coro: Awaitable[Any]) -> Any:
        """One bounded phase of a size run, sampled with py-spy when profiling."""
        slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")
        with self.phase(server, n, slug):
            return await self.bounded(what, coro)

    def left(self) -> float:
        """Seconds left in the budget."""
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        """A progress line with the time since start."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def log_fanout(self, what: str, result: dict[str, Any]) -> None:
        """A progress line for one fan-out workload."""
        self.log(
            f"  {what}: last subscriber p50 {result['last_sub_p50_ms']:.1f} ms, "
            f"{result['cpu_ms_per_update']:.2f} ms CPU/update, errors {result['errors']}"
        )

    def note(self, message: str) -> None:
        """A progress line that the report also shows, under the run's description."""
        self.plan.notes.append(message)
        self.log(message)

    async def bounded(self, what: str, coro: Awaitable[Any], limit: float | None = None) -> Any:
        """Await ``coro`` within the budget (and ``limit``), raising OutOfTime when it runs out."""
        allowed = self.left() if limit is None else min(limit, self.left())
        if self.interrupted:
            # A cancellation can be swallowed by a client call that retries; this catches it at the next phase.
            if asyncio.iscoroutine(coro):
                coro.close()
            raise Interrupted(what)
        if allowed <= 1:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise OutOfTime(what)
        try:
            return await asyncio.wait_for(coro, allowed)
        except TimeoutError:
            raise OutOfTime(what) from None


# Measurements


class FanoutTarget(Protocol):
    """What fanout() pushes to and meters: one server, or a topology of several processes."""

    def client(self) -> Pusher:
        """A client whose push() sets a key."""

    @property
    def pids(self) -> list[int]:
        """The processes whose CPU is the fan-out's cost."""


class AdminTarget:
    """datastream with its values saved by an operator in the admin (fanout()'s pushes become admin saves)."""

    def __init__(self, server: Datastream, session: AdminSave) -> None:
        self.server = server
        self.session = session

    def client(self) -> Pusher:
        """The admin session, logged in beforehand: the login's password hashing is not part of a save."""
        return self.session

    @property
    def pids(self) -> list[int]:
        """The server process: its admin and its fan-out are one process in the embedded profile."""
        return self.server.pids


def summarize_ready(answer: dict[str, Any], n: int) -> dict[str, Any]:
    """Subscribe or reconnect storm: when the median and the last subscriber were ready."""
    ready = answer["ready_ms"]
    errors = sum(answer["errors"].values())
    return {
        "subscribers": n,
        "ready": len(ready),
        "median_ready_ms": percentile(ready, 50),
        "all_ready_ms": max(ready) if len(ready) == n and ready else None,
        "errors": errors,
        "errors_by_reason": answer["errors"],
    }


async def fanout(
    server: FanoutTarget,
    pool: WorkerPool,
    keys: list[str],
    interval: float,
    drain_timeout: float,
    also: Sequence[CpuMeter | CoreMeter] = (),
) -> dict[str, Any]:
    """Push a send timestamp to each of ``keys`` in turn, ``interval`` apart, and time every delivery."""
    # ``also``: more meters, read over the same window as the server's CPU.
    client = server.client()
    try:
        await pool.reset()
        meter = CpuMeter(*server.pids).start()
        for extra in also:
            extra.start()
        sent: list[tuple[str, int]] = []
        push_errors = 0
        start = time.monotonic()
        for i, key in enumerate(keys):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            value = time.time_ns()
            try:
                await client.push(key, value)
                sent.append((key, value))
            except Exception:
                push_errors += 1
        expect = {key: value for key, value in sent}
        lagging = await pool.wait(expect, drain_timeout)
        meter.stop()
        for extra in also:
            extra.stop()
    finally:
        await client.close()
    collected = await pool.collect(sent)
    medians: list[float] = []
    lasts: list[float] = []
    finish: dict[str, float] = {}
    for (key, value), delays in zip(sent, collected["lat_us"], strict=True):
        if not delays:
            continue
        medians.append(percentile(delays, 50) / 1000)
        lasts.append(max(delays) / 1000)
        # Only the last update of each key matters for "everyone holds the latest".
        finish[key] = value / 1e6 + max(delays) / 1000
    undelivered = sum(collected["missing"])
    stream_errors = sum(collected["errors"].values())
    converge = None
    if sent and finish and not undelivered and not lagging:
        # Zero when every subscriber already held its keys' latest values as the last push was sent.
        converge = max(0.0, max(finish.values()) - sent[-1][1] / 1e6)
    return {
        "updates": len(sent),
        "updates_with_subscribers": len(medians),
        "deliveries": sum(len(d) for d in collected["lat_us"]),
        "median_sub_p50_ms": percentile(medians, 50),
        "median_sub_p99_ms": percentile(medians, 99),
        "last_sub_p50_ms": percentile(lasts, 50),
        "last_sub_p99_ms": percentile(lasts, 99),
        "converge_ms": converge,
        "cpu_s": meter.cpu,
        "cpu_ms_per_update": meter.cpu / max(1, len(keys)) * 1000,
        # Coalescing sends fewer values than updates x subscribers; per value sent, the cost compares fairly.
        "received_per_update": collected["received"] / max(1, len(sent)),
        "cpu_us_per_value": meter.cpu / collected["received"] * 1e6 if collected["received"] else None,
        "cpu_s_per_process": meter.per_pid,
        "server_util": meter.utilisation,
        "busiest_util": meter.busiest,
        "undelivered": undelivered,
        "lagging_at_end": lagging,
        "push_errors": push_errors,
        "stream_errors": stream_errors,
        "errors": undelivered + push_errors + stream_errors,
        "errors_by_reason": collected["errors"],
    }


async def settle(pid: int, window: float = 0.3, idle: float = 0.05, limit: float = 20.0) -> None:
    """Wait (at most ``limit`` seconds) until ``pid`` uses under ``idle`` of a core over ``window`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        meter = CpuMeter(pid).start()
        await asyncio.sleep(window)
        if meter.stop().utilisation < idle:
            return


async def reconnect(
    server: Server,
    pool: WorkerPool,
    n: int,
    timeout: float,
    resume: bool = False,
    changed: Sequence[str] = (),
) -> dict[str, Any]:
    """Every subscriber drops its connection and resubscribes at once; then one push must reach all.

    ``resume``: each asks from the revision it holds (since_revision), so its first message holds only what
    changed meanwhile. ``changed``: keys pushed while every stream is closed; the first messages must bring
    them. ``bytes``: the first messages' size, all subscribers.
    """
    expect: dict[str, int] = {}
    if changed:
        await pool.drop()
        client = server.client()
        try:
            for key in changed:
                expect[key] = time.time_ns()
                await client.push(key, expect[key])
        finally:
            await client.close()
        # The server ends the dropped streams (and logs each) before the storm's window opens.
        await settle(server.pid)
    await pool.reset()
    meter = CpuMeter(server.pid).start()
    answer = await pool.reconnect(time.time_ns(), limit=n, timeout=timeout, resume=resume)
    meter.stop()
    result = summarize_ready(answer, n)
    result["cpu_s"] = meter.cpu
    result["bytes"] = answer.get("bytes")
    # Subscribers ready without a change made while they were away (none expected: the first message has it).
    result["stale_after"] = await pool.wait(expect, 0) if expect else 0
    # A stream that reconnected but is dead would only show on the next change.
    await pool.reset()
    client = server.client()
    try:
        value = time.time_ns()
        await client.push(HOT_KEY, value)
        lagging = await pool.wait({HOT_KEY: value}, 15)
    except Exception as exc:
        # The push itself failed: no stream can be shown live; the reason goes with the errors.
        reason = f"push after the storm: {exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else exc}"
        result["errors_by_reason"][reason] = 1
        lagging = result["ready"]
    finally:
        await client.close()
    result["not_live_after"] = lagging
    result["errors"] += lagging + result["stale_after"]
    return result


async def rate(
    server: Server, callers: list[Any], call: Callable[[Any, random.Random], Awaitable[bool]], seconds: float, seed: int
) -> dict[str, Any]:
    """Calls per second of ``call`` from every caller in a loop for ``seconds``; each caller connects first."""
    rng = random.Random(seed)
    done = 0
    errors = 0
    try:
        # Connect first so the window times calls, not handshakes.
        await asyncio.gather(*(c.sync(KEYS[:1]) for c in {id(c): c for c in callers}.values()))
        meter = CpuMeter(server.pid).start()
        deadline = time.monotonic() + seconds

        async def loop(caller: Any) -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                try:
                    ok = await call(caller, rng)
                except Exception:
                    ok = False
                done, errors = (done + 1, errors) if ok else (done, errors + 1)

        await asyncio.gather(*(loop(c) for c in callers))
        meter.stop()
    finally:
        await asyncio.gather(*(c.close() for c in {id(c): c for c in callers}.values()), return_exceptions=True)
    return {
        "per_s": done / meter.wall,
        "server_util": meter.utilisation,
        "cpu_ms_per_call": meter.cpu / max(1, done) * 1000,
        "errors": errors,
    }


async def push_throughput(server: Server, seconds: float, concurrency: int, seed: int) -> dict[str, Any]:
    """Pushes per second to random keys from ``concurrency`` callers on two connections."""
    connections = [server.client() for _ in range(2)]

    async def push(client: Any, rng: random.Random) -> bool:
        await client.push(rng.choice(KEYS), time.time_ns())
        return True

    callers = [connections[i % 2] for i in range(concurrency)]
    return await rate(server, callers, push, seconds, seed)


async def sync_throughput(
    server: Server, transport: str, nkeys: int, seconds: float, concurrency: int, seed: int
) -> dict[str, Any]:
    """Reads of ``nkeys`` random keys per second, over gRPC or REST, one connection per caller."""

    def connect() -> Any:
        return server.client() if transport == "grpc" else RestSync(server.name, "127.0.0.1", server.http_port)

    async def sync(caller: Any, rng: random.Random) -> bool:
        return bool(await caller.sync(rng.sample(KEYS, nkeys)) == nkeys)

    return await rate(server, [connect() for _ in range(concurrency)], sync, seconds, seed)


async def warm_up(server: Server) -> None:
    """A few pushes and reads so lazy imports and caches are not timed."""
    client = server.client()
    try:
        for i in range(20):
            await client.push(KEYS[i], time.time_ns())
            await client.sync(KEYS[i : i + 10])
    finally:
        await client.close()


def b_layout(n: int, keys_per_sub: int, seed: int) -> list[list[str]]:
    """Each subscriber on ``keys_per_sub`` random keys of the 1,000 (the same for both systems)."""
    rng = random.Random(seed + n)
    return [rng.sample(KEYS, keys_per_sub) for _ in range(n)]


def storm_layout(keys: int) -> list[str]:
    """The first ``keys`` of the seeded keys in key order (the hot key first): one range for etcd."""
    return sorted([HOT_KEY, *KEYS])[:keys]


def open_timeout(n: int) -> float:
    """How long opening ``n`` subscriptions may take."""
    return 30.0 + n * 0.012


# The run


async def unloaded(run: Run, server: Server) -> dict[str, Any]:
    """Push throughput with no subscriber, and Sync rates for 1 and 100 keys over gRPC and REST."""
    plan = run.plan
    out: dict[str, Any] = {}
    with run.phase(server, 0, "push"):
        out["push_0"] = await run.bounded(
            "push throughput", push_throughput(server, plan.push_seconds, plan.push_concurrency, plan.seed)
        )
    # One caller: no write contention, so the difference to the line above is what concurrency costs.
    with run.phase(server, 0, "push-serial"):
        out["push_0_serial"] = await run.bounded(
            "serial push throughput", push_throughput(server, plan.push_seconds, 1, plan.seed)
        )
    run.log(
        f"  {server.name}: {out['push_0']['per_s']:.0f} pushes/s with no subscriber "
        f"({out['push_0_serial']['per_s']:.0f}/s from a single caller)"
    )
    for transport in ("grpc", "rest"):
        for nkeys in (1, 100):
            name = f"sync_{transport}_{nkeys}"
            with run.phase(server, 0, name):
                out[name] = await run.bounded(
                    name,
                    sync_throughput(server, transport, nkeys, plan.sync_seconds, plan.sync_concurrency, plan.seed),
                )
            run.log(f"  {server.name}: {out[name]['per_s']:.0f} {transport} syncs/s of {nkeys} key(s)")
    return out


async def open_streams(
    run: Run, server: Server, subs: list[list[str]], what: str, *, per_channel: int
) -> dict[str, Any]:
    """Open one Subscribe (or watch) per entry of ``subs`` in the worker pool; when the median and last were ready."""
    n = len(subs)
    opened = await run.step(
        server,
        n,
        what,
        run.pool.open(
            server.protocol,
            server.grpc_target,
            subs,
            per_channel=per_channel,
            limit=run.plan.open_limit,
            timeout=open_timeout(n),
        ),
    )
    return summarize_ready(opened, n)


async def workload_b(run: Run, server: Server, n: int, out: dict[str, Any], core_started: float) -> float:
    """Workload (b), then the loaded push throughput at its size; return the seconds since ``core_started``."""
    plan = run.plan
    subs = b_layout(n, plan.b_keys, plan.seed)
    out["open_b"] = await open_streams(run, server, subs, "open (b)", per_channel=plan.per_channel)
    rng = random.Random(plan.seed + 7)
    keys = [rng.choice(KEYS) for _ in range(plan.b_updates)]
    out["b"] = await run.step(
        server, n, "workload (b)", fanout(server, run.pool, keys, plan.b_interval, drain_timeout=30)
    )
    run.log_fanout("(b)", out["b"])
    core_s = time.monotonic() - core_started
    out["core_s"] = core_s
    if n == plan.loaded_size:
        out["push_loaded"] = await run.step(
            server,
            n,
            "loaded push throughput",
            push_throughput(server, plan.push_seconds, plan.push_concurrency, plan.seed),
        )
        run.log(f"  {out['push_loaded']['per_s']:.0f} pushes/s with {n} subscribers")
    errors = await run.bounded("close (b)", run.pool.close())
    # Streams that failed after (b) was measured failed under the loaded push test, if one ran.
    if "push_loaded" in out:
        out["push_loaded"]["errors"] += sum(errors.values())
    else:
        out["b"]["errors"] += sum(errors.values())
    return core_s


async def own_connections(run: Run, server: Server, n: int) -> dict[str, Any]:
    """Workload (a) again with every subscriber on a connection of its own, as a fleet of single clients."""
    plan = run.plan
    out: dict[str, Any] = {
        "open": await open_streams(run, server, [[HOT_KEY]] * n, "open (a), one connection each", per_channel=1)
    }
    out["a"] = await run.step(
        server,
        n,
        "workload (a), one connection each",
        fanout(server, run.pool, [HOT_KEY] * plan.a1_updates, plan.a_interval, drain_timeout=30),
    )
    out["a"]["errors"] += sum((await run.bounded("close (a), one connection each", run.pool.close())).values())
    run.log_fanout("(a) one connection each", out["a"])
    return out


async def run_size(run: Run, server: Server, n: int, *, first: bool, full: bool = True) -> dict[str, Any]:
    """Every workload at ``n`` subscribers on a freshly started server (not ``full``: only RSS, (a) and (c))."""
    plan = run.plan
    out: dict[str, Any] = {}
    started = time.monotonic()
    core_s = 0.0
    await run.bounded("server start", server.start(), 90)  # not profiled: no pid yet
    run.log(f"{server.name}: started (pid {server.pid}) for N={n}")
    try:
        await run.bounded("warm-up", warm_up(server), 60)
        core_started = time.monotonic()
        rss0 = rss_bytes(server.pid)
        out["open_a"] = await open_streams(run, server, [[HOT_KEY]] * n, "open (a)", per_channel=plan.per_channel)
        out["rss_per_stream_kib"] = (rss_bytes(server.pid) - rss0) / n / 1024
        run.log(
            f"  {server.name} N={n}: {out['open_a']['ready']} streams open in "
            f"{(out['open_a']['all_ready_ms'] or float('nan')) / 1000:.1f}s, "
            f"{out['rss_per_stream_kib']:.1f} KiB RSS per stream"
        )
        out["a"] = await run.step(
            server,
            n,
            "workload (a)",
            fanout(server, run.pool, [HOT_KEY] * plan.a_updates, plan.a_interval, drain_timeout=30),
        )
        run.log_fanout("(a)", out["a"])
        if isinstance(server, Datastream) and full and n == plan.loaded_size:
            # Same subscribers and key as (a), the value saved through the admin's change form instead.
            session = server.admin()
            await run.bounded("admin login", session.login(), 30)
            out["admin"] = await run.step(
                server,
                n,
                "admin saves",
                fanout(AdminTarget(server, session), run.pool, [HOT_KEY] * plan.admin_updates, plan.a_interval, 30),
            )
            run.log_fanout("admin saves", out["admin"])
        out["c"] = await run.step(server, n, "workload (c)", reconnect(server, run.pool, n, timeout=open_timeout(n)))
        run.log(
            f"  (c) all {n} resubscribed in {(out['c']['all_ready_ms'] or float('nan')):.0f} ms, "
            f"{out['c']['cpu_s']:.2f} s server CPU, {out['c']['bytes']} bytes"
        )
        if server.name == OURS:
            # The same storm again, each stream resuming from the revision it holds.
            out["c_resume"] = await run.step(
                server, n, "workload (c), resumed", reconnect(server, run.pool, n, open_timeout(n), resume=True)
            )
            run.log(
                f"  (c) resumed: all {n} in {(out['c_resume']['all_ready_ms'] or float('nan')):.0f} ms, "
                f"{out['c_resume']['cpu_s']:.2f} s server CPU, {out['c_resume']['bytes']} bytes"
            )
        closed = sum((await run.bounded("close (c)", run.pool.close())).values())
        out["c_resume" if "c_resume" in out else "c"]["errors"] += closed
        run.log(
            f"  (c) errors {out['c']['errors']}"
            + (f", resumed {out['c_resume']['errors']}" if "c_resume" in out else "")
        )
        if n == plan.loaded_size:
            out["a1"] = await own_connections(run, server, n)
        if full:
            core_s = await workload_b(run, server, n, out, core_started)
        else:
            core_s = time.monotonic() - core_started
            out["core_s"] = core_s
        if first and full:
            # Last, with every stream closed: run before (a), the memory these
            # tests free would be reused by the streams and hide their RSS.
            unloaded_started = time.monotonic()
            out["unloaded"] = await unloaded(run, server)
            out["unloaded_s"] = time.monotonic() - unloaded_started
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.pool.close(), 30)
        server.stop()
    out["elapsed_s"] = time.monotonic() - started
    out["fixed_s"] = out["elapsed_s"] - core_s - out.get("unloaded_s", 0.0)
    return out


async def storm_size(run: Run, server: Server, n: int, out: dict[str, Any]) -> None:
    """The reconnect storm with ``n`` subscribers on ``plan.storm_keys`` keys each, a few changed meanwhile.

    On datastream twice: full snapshots, then resuming from the revision each held; on etcd its Range over
    the keys and a watch over them from the next revision.
    """
    plan = run.plan
    keys = storm_layout(plan.storm_keys)
    changed = keys[1 : 1 + plan.storm_changes]
    # ``out`` is filled as the run goes, so what was measured stays when a later step fails.
    out.update(keys=len(keys), changed=len(changed))
    started = time.monotonic()
    await run.bounded("server start", server.start(), 90)
    run.log(f"{server.name}: started (pid {server.pid}) for the storm on {len(keys)} keys, N={n}")
    try:
        await run.bounded("warm-up", warm_up(server), 60)
        core_started = time.monotonic()
        out["open"] = await open_streams(run, server, [keys] * n, "open (storm)", per_channel=plan.per_channel)
        run.log(
            f"  {server.name} N={n}: {out['open']['ready']} streams on {len(keys)} keys open in "
            f"{(out['open']['all_ready_ms'] or float('nan')) / 1000:.1f}s"
        )
        storms = [("full", False)] + ([("resumed", True)] if server.name == OURS else [])
        for name, resume in storms:
            out[name] = await run.step(
                server,
                n,
                f"storm on {len(keys)} keys, {name}",
                reconnect(server, run.pool, n, open_timeout(n), resume=resume, changed=changed),
            )
            run.log(
                f"  storm on {len(keys)} keys, {name}: all {n} in "
                f"{(out[name]['all_ready_ms'] or float('nan')):.0f} ms, {out[name]['cpu_s']:.2f} s server CPU, "
                f"{out[name]['bytes']} bytes, {out[name]['errors']} errors"
            )
        out[storms[-1][0]]["errors"] += sum((await run.bounded("close (storm)", run.pool.close())).values())
        out["core_s"] = time.monotonic() - core_started
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.pool.close(), 30)
        server.stop()
    out["elapsed_s"] = time.monotonic() - started
    out["fixed_s"] = out["elapsed_s"] - out["core_s"]


def estimate_storm(run: Run, n: int) -> float:
    """Seconds the storm at ``n`` would take, scaled from the largest size run (inf before any)."""
    total = 0.0
    for system in (OURS, ETCD):
        done = sorted((size, res) for size, res in run.results["storm"][system].items() if "core_s" in res)
        if not done:
            return float("inf")
        size, res = done[-1]
        # 30% more for what grows faster than linearly.
        total += res["fixed_s"] + 1.3 * res["core_s"] * n / size
    return total


async def storm_part(run: Run, ours: Datastream, etcd: Etcd) -> None:
    """The storm on many keys per subscriber at each of ``plan.storm_sizes``, datastream then etcd."""
    plan = run.plan
    storm = run.results["storm"]
    storm.update(keys=plan.storm_keys, changed=plan.storm_changes)
    for n in plan.storm_sizes:
        if not fits(run, f"storm on {plan.storm_keys} keys, N={n}", estimate_storm(run, n)):
            return
        for server in (ours, etcd):
            out = storm[server.name][n] = {}
            try:
                await storm_size(run, server, n, out)
            except Exception as exc:
                # Like the floor's: the storm's failure is a note, the rest of the run goes on.
                if isinstance(exc, OutOfTime):
                    why = "the time budget ran out"
                elif isinstance(exc, grpc.aio.AioRpcError):
                    why = f"{exc.code().name}: {exc.details()}"
                else:
                    why = f"{type(exc).__name__}: {exc}"
                run.note(f"storm on {plan.storm_keys} keys, {server.name} N={n}: stopped ({why})")
                out["incomplete"] = why
                server.stop()
                await run.pool.stop()
                run.pool = WorkerPool(run.logs, run.plan.per_worker)
                return


def estimate(run: Run, n: int) -> float:
    """Seconds ``n`` subscribers would take, extrapolated linearly from the two largest sizes run."""
    total = 0.0
    for system in (OURS, ETCD, FLOOR):
        sizes = sorted((size, res) for size, res in run.results[system].items() if "core_s" in res)
        if len(sizes) < 2:
            # A floor that failed is left out (its failure is a note); without the other two there is no guess.
            if system == FLOOR:
                continue
            return float("inf")
        (n1, r1), (n2, r2) = sizes[-2], sizes[-1]
        slope = max(0.0, (r2["core_s"] - r1["core_s"]) / (n2 - n1))
        # Start, warm-up and stop do not grow with N; 60% more for what grows faster than linearly.
        total += r2["fixed_s"] + 1.6 * (r2["core_s"] + slope * (n - n2))
    return total


# Scale-out: the production profile with one and with two gRPC processes


async def production_warm_up(prod: Production) -> None:
    """A few REST pushes and gRPC reads on every process so lazy imports and connections are not timed."""
    client = prod.client()
    readers = [OursClient(target) for target in prod.grpc_targets]
    try:
        for i in range(10):
            await client.push(KEYS[i], time.time_ns())
            for reader in readers:
                await reader.sync(KEYS[i : i + 10])
    finally:
        await client.close()
        await asyncio.gather(*(reader.close() for reader in readers), return_exceptions=True)


async def scaleout_size(run: Run, prod: Production, n: int, procs: int) -> dict[str, Any]:
    """Workload (a) with ``n`` subscribers split evenly over ``procs`` freshly started gRPC processes."""
    plan = run.plan
    pool = run.spread_pool
    out: dict[str, Any] = {"processes": procs}
    started = time.monotonic()
    scaling = 0.0
    await run.bounded("gRPC start", prod.start_grpc(procs), 90)
    run.log(f"production N={n}: {procs} gRPC process(es) serving (pids {', '.join(map(str, prod.pids))})")
    try:
        await run.bounded("warm-up", production_warm_up(prod), 60)
        scaling_started = time.monotonic()
        slug = f"production-N{n}-{procs}p"
        with run.sample_all(prod.pids, f"{slug}-open"):
            opened = await run.bounded(
                "open (production)",
                pool.open(
                    OURS,
                    prod.grpc_targets,
                    [[HOT_KEY]] * n,
                    per_channel=plan.per_channel,
                    limit=plan.open_limit,
                    timeout=open_timeout(n),
                ),
            )
        out["open"] = summarize_ready(opened, n)
        # Where else the time goes: the web process's pushes, the subscribers' reads, each core as a whole.
        web, clients, cores = CpuMeter(prod.web_pid), CpuMeter(*pool.pids), CoreMeter()
        with run.sample_all(prod.pids, f"{slug}-a"):
            out["a"] = await run.bounded(
                "workload (a), production",
                fanout(
                    prod,
                    pool,
                    [HOT_KEY] * plan.a_updates,
                    plan.a_interval,
                    drain_timeout=30,
                    also=(web, clients, cores),
                ),
            )
        updates = max(1, out["a"]["updates"])
        out["a"]["web_cpu_ms_per_push"] = web.cpu / updates * 1000
        out["a"]["client_cpu_ms_per_update"] = clients.cpu / updates * 1000
        out["a"]["core_busy"] = cores.busy
        closed = await run.bounded("close (production)", pool.close())
        # collect() already counted the streams that had failed by then; only later failures are new.
        out["a"]["errors"] += max(0, sum(closed.values()) - out["a"]["stream_errors"])
        scaling = time.monotonic() - scaling_started
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 30)
        prod.stop_grpc()
    out["elapsed_s"] = time.monotonic() - started
    # Opening, draining, collecting and closing grow with N; the pushes' own 4 s and the starts do not.
    out["scaling_s"] = max(0.0, scaling - plan.a_updates * plan.a_interval)
    out["fixed_s"] = out["elapsed_s"] - out["scaling_s"]
    a = out["a"]
    run.log(
        f"  {procs} process(es): open {(out['open']['all_ready_ms'] or float('nan')) / 1000:.1f}s, "
        f"last subscriber p50 {a['last_sub_p50_ms']:.1f} ms p99 {a['last_sub_p99_ms']:.1f} ms, "
        f"{a['cpu_ms_per_update']:.1f} ms gRPC CPU/update, errors {a['errors']}"
    )
    return out


def estimate_production(run: Run, n: int) -> float:
    """Seconds the scale-out rounds at ``n`` would take, from the largest size measured (inf: none yet)."""
    measured = sorted(
        (size, res)
        for size, res in run.results[PRODUCTION].items()
        if res and all(r.get("runs") and "scaling_s" in r["runs"][0] for r in res.values())
    )
    if not measured:
        return float("inf")
    size, configs = measured[-1]
    runs = [one for result in configs.values() for one in result["runs"]]
    per_run = sum(r["fixed_s"] + 2.0 * r["scaling_s"] * n / size for r in runs) / len(runs)
    # Linear in N, doubled for what grows faster (coalescing stops, the cores saturate): at 10,000 the
    # linear guess from 1,000 came out 20-30 % short.
    return float(per_run * len(run.plan.production_procs) * run.plan.production_rounds)


# Counts: summed over rounds (every error of every round shows); every other figure is averaged.
SUMMED = {"errors", "errors_by_reason", "undelivered", "push_errors", "stream_errors", "lagging_at_end"}


def combine(values: list[Any], summed: bool = False) -> Any:
    """Several rounds' values of one figure merged: the mean, or the sum for counts; None if any is missing."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sum(values) if summed else sum(values) / len(values)
    if all(isinstance(v, dict) for v in values):
        keys = {k: None for v in values for k in v}
        return {k: combine([v[k] for v in values if k in v], summed or k in SUMMED) for k in keys}
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
        return [combine(list(items), summed) for items in zip(*values, strict=True)]
    return values[0] if all(v == values[0] for v in values) else None


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds: each figure averaged (errors summed), every round kept under "runs"."""
    merged: dict[str, Any] = combine(runs)
    merged["runs"] = runs
    merged["rounds"] = len(runs)
    return merged


def round_order(procs: list[int], rounds: int) -> list[int]:
    """1, 2, 2, 1, ...: alternating the order cancels a steady drift in the machine's load."""
    order: list[int] = []
    for index in range(rounds):
        order += procs if index % 2 == 0 else list(reversed(procs))
    return order


async def scaleout(run: Run, prod: Production, n: int) -> None:
    """Every process count at ``n``, in alternating order over the rounds; a budget overrun ends the size."""
    runs: dict[int, list[dict[str, Any]]] = {}
    for procs in round_order(run.plan.production_procs, run.plan.production_rounds):
        try:
            runs.setdefault(procs, []).append(await scaleout_size(run, prod, n, procs))
        except OutOfTime as exc:
            note = f"production N={n}, {procs} gRPC process(es): stopped when the time budget ran out (during {exc})"
            run.note(note)
            await run.spread_pool.stop()
            run.spread_pool = WorkerPool(run.logs, run.plan.per_worker, cores=[SERVER_CORE, CLIENT_CORE], name="spread")
            break
        finally:
            run.results[PRODUCTION][n] = {p: combine_rounds(r) for p, r in runs.items() if r}


async def start_production(run: Run) -> Production | None:
    """PostgreSQL, Redis and the web process, migrated and seeded; None (with a note) when impossible."""
    missing = missing_servers()
    if missing:
        note = "production part skipped: " + "; ".join(missing)
        run.note(note)
        return None
    prod = Production(run.logs)
    run.log("production: PostgreSQL and Redis, migrate and seed 1,001 int keys, web process")
    try:
        # Blocking, on purpose on the loop's (main) thread: see Production.start_backends.
        prod.start_backends()
        await run.bounded("web start", prod.start_web(), 90)
    except Exception:
        prod.cleanup()
        raise
    run.results["meta"]["production_versions"] = prod.versions()
    run.results["meta"]["production_data"] = prod.data_place
    return prod


async def compare_size(run: Run, ours: Datastream, etcd: Etcd, floor: Floor, n: int, *, first: bool) -> None:
    """Every workload at ``n`` on the embedded profile, then on etcd; then RSS, (a) and (c) on the floor."""
    for server in (ours, etcd, floor):
        try:
            run.results[server.name][n] = await run_size(run, server, n, first=first, full=server is not floor)
            continue
        except OutOfTime as exc:
            note = f"{server.name} N={n}: stopped when the time budget ran out (during {exc})"
            failure: Exception = exc
        except Exception as exc:
            # The floor only explains the other two: its failure is a note, not the end of the run.
            if server is not floor:
                raise
            note = f"{server.name} N={n}: failed ({type(exc).__name__}: {exc})"
            failure = exc
            # A start that timed out leaves the process running; the next size starts a new one.
            server.stop()
        run.note(note)
        run.results[server.name][n] = {"incomplete": str(failure)}
        await run.pool.stop()
        run.pool = WorkerPool(run.logs, run.plan.per_worker)


def fits(run: Run, what: str, need: float) -> bool:
    """Whether ``need`` seconds are left (inf: nothing to estimate from, so try); a skip becomes a note."""
    if need != float("inf") and need > run.left() - 15:
        note = f"{what} skipped: estimated {need:.0f}s from the smaller runs, {run.left():.0f}s left"
        run.note(note)
        return False
    if need != float("inf"):
        run.log(f"{what}: estimated {need:.0f}s, {run.left():.0f}s left")
    return True


async def run_all(run: Run, *, comparison: bool = True, production: bool = True) -> None:
    """The comparison with etcd per size, then scale-out, within the budget."""
    # Order: the required comparison sizes, scale-out at those sizes, the optional comparison size if it
    # fits with the larger scale-out sizes' estimate kept free, then those scale-out sizes: when time is
    # short, the optional comparison size gives way to scale-out.
    plan = run.plan
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def interrupt() -> None:
        run.interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    ours = Datastream(run.logs) if comparison else None
    etcd = Etcd(run.logs) if comparison else None
    floor = Floor(run.logs) if comparison else None
    run.results["meta"] = {"ours_versions": Datastream.version(), "etcd_version": etcd.version() if etcd else ""}
    prod: Production | None = None
    production_sizes = plan.production_sizes if production else []
    largest = max(plan.sizes, default=0) if comparison else 0
    early = [n for n in production_sizes if n <= largest]
    late = [n for n in production_sizes if n > largest]
    try:
        if ours is not None and etcd is not None and floor is not None:
            run.log("datastream: migrate and seed 1,001 int keys")
            await asyncio.to_thread(ours.prepare)
            for index, n in enumerate(plan.sizes):
                await compare_size(run, ours, etcd, floor, n, first=index == 0)
        if production_sizes:
            prod = await start_production(run)
        elif production:
            run.log("scale-out part (production profile) skipped: --quick has no time for it")
        if prod is not None:
            for n in early:
                await scaleout(run, prod, n)
        if ours is not None and etcd is not None and floor is not None:
            await storm_part(run, ours, etcd)
            for n in plan.optional_sizes:
                later = sum(estimate_production(run, m) for m in late) if prod is not None else 0.0
                if fits(run, f"N={n}", estimate(run, n) + later):
                    await compare_size(run, ours, etcd, floor, n, first=False)
        if prod is not None:
            for n in late:
                if fits(run, f"production N={n}", estimate_production(run, n)):
                    await scaleout(run, prod, n)
    finally:
        await run.pool.stop()
        await run.spread_pool.stop()
        for system in (ours, etcd, floor, prod):
            if system is not None:
                system.cleanup()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N=100 only, few updates: a smoke run under a minute")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md and the plot")
    parser.add_argument(
        "--sizes", type=lambda text: [int(x) for x in text.split(",")], help="subscriber counts, e.g. 1000,5000"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the datastream server (and the scale-out gRPC processes) with py-spy per phase (into the logs)",
    )
    parser.add_argument(
        "--only",
        choices=["comparison", "production"],
        help="run only the comparison with etcd (and the floor), or only the production-profile scale-out",
    )
    parser.add_argument(
        "--storm-sizes",
        type=lambda text: [int(x) for x in text.split(",") if x],
        help="subscriber counts for the storm on many keys per subscriber (empty: skip it), e.g. 1000",
    )
    parser.add_argument(
        "--production-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        help="subscriber counts for the scale-out part, e.g. 1000,10000",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    args = parse_args(argv)
    plan = make_plan(args.quick)
    if args.sizes:
        plan.sizes, plan.optional_sizes = args.sizes, []
        plan.loaded_size = plan.loaded_size if plan.loaded_size in args.sizes else max(args.sizes)
    if args.production_sizes:
        plan.production_sizes = args.production_sizes
    if args.storm_sizes is not None:
        plan.storm_sizes = args.storm_sizes
    if args.profile:
        if py_spy() is None:
            print("--profile: py-spy not found (pip install py-spy); running without it", flush=True)
        else:
            plan.profile = True
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / stamp
    logs.mkdir(parents=True, exist_ok=True)
    # Before pinning, so the core count is the machine's and not the client core's.
    machine = report.machine()
    pinned = pin_self_to_client_core()
    if pinned:
        print(
            f"pinning: servers on core {SERVER_CORE} (taskset -c {SERVER_CORE}); harness, pushers and "
            f"subscriber processes on core {CLIENT_CORE} (so the client core is busy too)",
            flush=True,
        )
    else:
        print("pinning: fewer than two cores or no taskset; server and clients share the CPUs", flush=True)
        plan.notes.append("not pinned: fewer than two cores or no taskset")
    run = Run(plan, logs)
    failure: BaseException | None = None
    try:
        asyncio.run(run_all(run, comparison=args.only != "production", production=args.only != "comparison"))
    except (KeyboardInterrupt, Interrupted, asyncio.CancelledError) as exc:
        failure = exc
        plan.notes.append("interrupted")
        run.log("interrupted; servers and workers stopped")
    except Exception as exc:
        failure = exc
        run.note(f"run failed: {type(exc).__name__}: {exc}")
    machine["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    results = {
        "plan": asdict(plan),
        "pinned": pinned,
        "started": stamp,
        "elapsed_s": time.monotonic() - run.started,
        "results": run.results,
        "machine": machine,
    }
    (logs / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    table = report.markdown_tables(results)
    print(table, flush=True)
    # Only the full default run describes the service; partial or profiled runs leave the docs alone.
    partial = args.sizes or args.production_sizes or args.only or args.storm_sizes is not None
    if not args.no_docs and not plan.quick and not partial and not plan.profile and failure is None:
        report.write_docs(results, table)
    print(f"results: {logs / 'results.json'}; logs in {logs}", flush=True)
    if isinstance(failure, (KeyboardInterrupt, Interrupted, asyncio.CancelledError)):
        return 130
    return 1 if failure is not None else 0
