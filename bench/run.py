"""The benchmark run: datastream against etcd, same workloads, same clients, same machine."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.clients import RestSync
from bench.common import ETCD, HOT_KEY, KEYS, OURS, percentile
from bench.pool import WorkerPool
from bench.procs import CLIENT_CORE, SERVER_CORE, CpuMeter, pin_self_to_client_core, rss_bytes
from bench.profile import py_spy, sampled
from bench.systems import ROOT, Datastream, Etcd, Server

RESULTS = ROOT / "bench" / "results"


@dataclass
class Plan:
    """What to run and how long each part may take."""

    sizes: list[int]
    optional_sizes: list[int]
    a_updates: int = 20
    a_interval: float = 0.2
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
            b_updates=30,
            push_seconds=1.0,
            sync_seconds=0.7,
            loaded_size=100,
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
        self.results: dict[str, Any] = {OURS: {}, ETCD: {}}
        self.interrupted = False

    def phase(self, server: Server, n: int, name: str) -> contextlib.AbstractContextManager[None]:
        """py-spy sampling of the datastream server for one phase when --profile is on."""
        if not self.plan.profile or server.name != OURS or server.process is None:
            return contextlib.nullcontext()
        return sampled(server.pid, self.logs / f"py-spy-N{n}-{name}")

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
    server: Server, pool: WorkerPool, keys: list[str], interval: float, drain_timeout: float
) -> dict[str, Any]:
    """Push a send timestamp to each of ``keys`` in turn, ``interval`` apart, and time every delivery."""
    client = server.client()
    try:
        await pool.reset()
        meter = CpuMeter(server.pid).start()
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
        "server_util": meter.utilisation,
        "undelivered": undelivered,
        "lagging_at_end": lagging,
        "push_errors": push_errors,
        "stream_errors": stream_errors,
        "errors": undelivered + push_errors + stream_errors,
        "errors_by_reason": collected["errors"],
    }


async def reconnect(server: Server, pool: WorkerPool, n: int, timeout: float) -> dict[str, Any]:
    """Every subscriber drops its connection and resubscribes at once; then one push must reach all."""
    meter = CpuMeter(server.pid).start()
    answer = await pool.reconnect(time.time_ns(), limit=n, timeout=timeout)
    meter.stop()
    result = summarize_ready(answer, n)
    result["cpu_s"] = meter.cpu
    # A stream that reconnected but is dead would only show on the next change.
    await pool.reset()
    client = server.client()
    try:
        value = time.time_ns()
        await client.push(HOT_KEY, value)
        lagging = await pool.wait({HOT_KEY: value}, 15)
    finally:
        await client.close()
    result["not_live_after"] = lagging
    result["errors"] += lagging
    return result


async def push_throughput(server: Server, seconds: float, concurrency: int, seed: int) -> dict[str, Any]:
    """Pushes per second to random keys from ``concurrency`` callers on two connections."""
    rng = random.Random(seed)
    clients = [server.client() for _ in range(2)]
    done = 0
    errors = 0
    try:
        # Connect first so the window times pushes, not handshakes.
        await asyncio.gather(*(c.push(KEYS[i], time.time_ns()) for i, c in enumerate(clients)))
        meter = CpuMeter(server.pid).start()
        deadline = time.monotonic() + seconds

        async def pusher(index: int) -> None:
            nonlocal done, errors
            client = clients[index % len(clients)]
            while time.monotonic() < deadline:
                try:
                    await client.push(rng.choice(KEYS), time.time_ns())
                    done += 1
                except Exception:
                    errors += 1

        await asyncio.gather(*(pusher(i) for i in range(concurrency)))
        meter.stop()
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {
        "per_s": done / meter.wall,
        "server_util": meter.utilisation,
        "cpu_ms_per_push": meter.cpu / max(1, done) * 1000,
        "errors": errors,
    }


async def sync_throughput(
    server: Server, transport: str, nkeys: int, seconds: float, concurrency: int, seed: int
) -> dict[str, Any]:
    """Reads of ``nkeys`` random keys per second, over gRPC or REST, one connection per caller."""
    rng = random.Random(seed)
    callers: list[Any]
    if transport == "grpc":
        callers = [server.client() for _ in range(concurrency)]
    else:
        callers = [RestSync(server.name, "127.0.0.1", server.http_port) for _ in range(concurrency)]
    done = 0
    errors = 0
    try:
        await asyncio.gather(*(c.sync(KEYS[:1]) for c in callers))
        meter = CpuMeter(server.pid).start()
        deadline = time.monotonic() + seconds

        async def reader(caller: Any) -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                keys = rng.sample(KEYS, nkeys)
                try:
                    got = await caller.sync(keys)
                    if got == nkeys:
                        done += 1
                    else:
                        errors += 1
                except Exception:
                    errors += 1

        await asyncio.gather(*(reader(c) for c in callers))
        meter.stop()
    finally:
        await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)
    return {"per_s": done / meter.wall, "server_util": meter.utilisation, "errors": errors}


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


async def run_size(run: Run, server: Server, n: int, *, first: bool) -> dict[str, Any]:
    """Every workload at ``n`` subscribers on a freshly started server."""
    plan = run.plan
    out: dict[str, Any] = {}
    started = time.monotonic()
    core_s = 0.0
    await run.bounded("server start", server.start(), 90)  # not profiled: no pid yet
    run.log(f"{server.name}: started (pid {server.pid}) for N={n}")
    try:
        await run.bounded("warm-up", warm_up(server), 60)
        if first:
            unloaded_started = time.monotonic()
            out["unloaded"] = await unloaded(run, server)
            out["unloaded_s"] = time.monotonic() - unloaded_started
        core_started = time.monotonic()
        rss0 = rss_bytes(server.pid)
        opened = await run.step(
            server,
            n,
            "open (a)",
            run.pool.open(
                server.name,
                server.grpc_target,
                [[HOT_KEY]] * n,
                per_channel=plan.per_channel,
                limit=plan.open_limit,
                timeout=open_timeout(n),
            ),
        )
        out["open_a"] = summarize_ready(opened, n)
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
        run.log(
            f"  (a) last subscriber p50 {out['a']['last_sub_p50_ms']:.1f} ms, "
            f"{out['a']['cpu_ms_per_update']:.2f} ms CPU/update, errors {out['a']['errors']}"
        )
        out["c"] = await run.step(server, n, "workload (c)", reconnect(server, run.pool, n, timeout=open_timeout(n)))
        out["c"]["errors"] += sum((await run.bounded("close (c)", run.pool.close())).values())
        run.log(
            f"  (c) all {n} resubscribed in {(out['c']['all_ready_ms'] or float('nan')):.0f} ms, "
            f"errors {out['c']['errors']}"
        )
        subs = b_layout(n, plan.b_keys, plan.seed)
        opened = await run.step(
            server,
            n,
            "open (b)",
            run.pool.open(
                server.name,
                server.grpc_target,
                subs,
                per_channel=plan.per_channel,
                limit=plan.open_limit,
                timeout=open_timeout(n),
            ),
        )
        out["open_b"] = summarize_ready(opened, n)
        rng = random.Random(plan.seed + 7)
        keys = [rng.choice(KEYS) for _ in range(plan.b_updates)]
        out["b"] = await run.step(
            server, n, "workload (b)", fanout(server, run.pool, keys, plan.b_interval, drain_timeout=30)
        )
        run.log(
            f"  (b) last subscriber p50 {out['b']['last_sub_p50_ms']:.1f} ms, "
            f"{out['b']['cpu_ms_per_update']:.2f} ms CPU/update, errors {out['b']['errors']}"
        )
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
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.pool.close(), 30)
        server.stop()
    out["elapsed_s"] = time.monotonic() - started
    out["fixed_s"] = out["elapsed_s"] - core_s - out.get("unloaded_s", 0.0)
    return out


def estimate(run: Run, n: int) -> float:
    """Seconds ``n`` subscribers would take, extrapolated linearly from the two largest sizes run."""
    total = 0.0
    for system in (OURS, ETCD):
        sizes = sorted((size, res) for size, res in run.results[system].items() if "core_s" in res)
        if len(sizes) < 2:
            return float("inf")
        (n1, r1), (n2, r2) = sizes[-2], sizes[-1]
        slope = max(0.0, (r2["core_s"] - r1["core_s"]) / (n2 - n1))
        # Start, warm-up and stop do not grow with N; 60% more for what grows faster than linearly.
        total += r2["fixed_s"] + 1.6 * (r2["core_s"] + slope * (n - n2))
    return total


async def run_all(run: Run) -> None:
    """Every size for both systems, datastream then etcd per size, within the budget."""
    plan = run.plan
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def interrupt() -> None:
        run.interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    ours = Datastream(run.logs)
    etcd = Etcd(run.logs)
    run.results["meta"] = {"ours_versions": Datastream.version(), "etcd_version": etcd.version()}
    try:
        run.log("datastream: migrate and seed 1,001 int keys")
        await asyncio.to_thread(ours.prepare)
        sizes = [(n, False) for n in plan.sizes] + [(n, True) for n in plan.optional_sizes]
        first = True
        for n, optional in sizes:
            if optional:
                need = estimate(run, n)
                if need > run.left() - 15:
                    note = f"N={n} skipped: estimated {need:.0f}s from the smaller runs, {run.left():.0f}s left"
                    plan.notes.append(note)
                    run.log(note)
                    continue
                run.log(f"N={n}: estimated {need:.0f}s, {run.left():.0f}s left")
            for server in (ours, etcd):
                try:
                    run.results[server.name][n] = await run_size(run, server, n, first=first)
                except OutOfTime as exc:
                    note = f"{server.name} N={n}: stopped when the time budget ran out (during {exc})"
                    plan.notes.append(note)
                    run.log(note)
                    run.results[server.name][n] = {"incomplete": str(exc)}
                    await run.pool.stop()
                    run.pool = WorkerPool(run.logs, plan.per_worker)
            first = False
    finally:
        await run.pool.stop()
        ours.cleanup()
        etcd.cleanup()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N=100 only, few updates: a smoke run under a minute")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md and the plot")
    parser.add_argument(
        "--sizes", type=lambda text: [int(x) for x in text.split(",")], help="subscriber counts, e.g. 1000,5000"
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the datastream server with py-spy per phase (into the logs)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    args = parse_args(argv)
    plan = make_plan(args.quick)
    if args.sizes:
        plan.sizes, plan.optional_sizes = args.sizes, []
        plan.loaded_size = plan.loaded_size if plan.loaded_size in args.sizes else max(args.sizes)
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
        asyncio.run(run_all(run))
    except (KeyboardInterrupt, Interrupted, asyncio.CancelledError) as exc:
        failure = exc
        plan.notes.append("interrupted")
        run.log("interrupted; servers and workers stopped")
    except Exception as exc:
        failure = exc
        plan.notes.append(f"run failed: {type(exc).__name__}: {exc}")
        run.log(f"run failed: {type(exc).__name__}: {exc}")
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
    if not args.no_docs and not plan.quick and not args.sizes and not plan.profile and failure is None:
        report.write_docs(results, table)
    print(f"results: {logs / 'results.json'}; logs in {logs}", flush=True)
    if isinstance(failure, (KeyboardInterrupt, Interrupted, asyncio.CancelledError)):
        return 130
    return 1 if failure is not None else 0
