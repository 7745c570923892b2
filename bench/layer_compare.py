"""RedisPubSubChannelLayer vs RedisChannelLayer for the datastream pattern: ``python -m bench.layer_compare``.

One group; one hub per process (a separate subscriber process each, joined
with new_channel + group_add, reading with receive); one group_send per change
from a publisher that, like datastream_app.publisher, awaits each send before
the next. Measures group_send -> receive latency with paced sends and
throughput with back-to-back sends, against a throwaway local Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

from tests.servers import RedisServer

GROUP = "datastream.changes"
LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
END = "bench.end"


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def make_layer(name: str, url: str) -> Any:
    """A layer of kind ``name`` on ``url`` with default options, as settings.py would build it."""
    module, _, cls = LAYERS[name].rpartition(".")
    return getattr(__import__(module, fromlist=[cls]), cls)(hosts=[url])


def change(revision: int) -> dict[str, Any]:
    """A message shaped like Entry.to_message(), stamped with the send time."""
    return {
        "type": "datastream.change",
        "key": "max_connections",
        "value_type": "int",
        "value": b"1234",
        "revision": revision,
        "updated_at_us": 1_700_000_000_000_000,
        "deleted": False,
        "sent": time.monotonic(),
    }


def subscriber(layer_name: str, url: str, ready: Event, results: mp.Queue[tuple[int, list[float], float]]) -> None:
    """A hub: join the group, record each change's latency until the end message."""

    async def run() -> tuple[int, list[float], float]:
        layer = make_layer(layer_name, url)
        channel = await layer.new_channel(prefix="datastream-hub.")
        await layer.group_add(GROUP, channel)
        ready.set()
        latencies: list[float] = []
        last = 0.0
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=10)
            except TimeoutError:
                break
            if message["type"] == END:
                break
            if message["type"] != "datastream.change":
                continue
            last = time.monotonic()
            latencies.append(last - message["sent"])
        await layer.group_discard(GROUP, channel)
        return len(latencies), latencies, last

    results.put(asyncio.run(run()))


@dataclass
class Result:
    """One run's figures."""

    layer: str
    hubs: int
    sent: int
    received: list[int]
    send_seconds: float
    deliver_seconds: float
    latencies_ms: list[float]

    def line(self, mode: str) -> str:
        """A markdown table row."""
        lat = self.latencies_ms
        delivered = min(self.received) / self.sent if self.sent else 0.0
        return (
            f"| {self.layer} | {mode} | {self.hubs} | {self.sent} | {delivered:.1%} "
            f"| {self.sent / self.send_seconds:,.0f} | {min(self.received) / self.deliver_seconds:,.0f} "
            f"| {percentile(lat, 50):.2f} | {percentile(lat, 99):.2f} | {max(lat, default=float('nan')):.2f} |"
        )


def run(layer_name: str, url: str, hubs: int, count: int, interval: float) -> Result:
    """Start ``hubs`` subscriber processes, send ``count`` changes ``interval`` apart (0: back to back)."""
    ctx = mp.get_context("spawn")
    results: mp.Queue[tuple[int, list[float], float]] = ctx.Queue()
    readies = [ctx.Event() for _ in range(hubs)]
    procs = [ctx.Process(target=subscriber, args=(layer_name, url, ready, results)) for ready in readies]
    for proc in procs:
        proc.start()
    for ready in readies:
        if not ready.wait(30):
            raise RuntimeError("subscriber did not start")

    async def publish() -> tuple[float, float, list[tuple[int, list[float], float]]]:
        layer = make_layer(layer_name, url)
        await layer.group_send(GROUP, {"type": "bench.warmup", "sent": time.monotonic()})
        await asyncio.sleep(0.5)
        start = time.monotonic()
        for revision in range(1, count + 1):
            await layer.group_send(GROUP, change(revision))
            if interval:
                await asyncio.sleep(interval)
        sent_at = time.monotonic()
        # The core layer drops sends to a channel over capacity: repeat the end until every hub is out.
        done: list[tuple[int, list[float], float]] = []
        while len(done) < hubs:
            await layer.group_send(GROUP, {"type": END})
            await asyncio.sleep(0.2)
            while True:
                try:
                    done.append(results.get_nowait())
                except queue.Empty:
                    break
        await layer.flush()
        return start, sent_at, done

    start, sent_at, done = asyncio.run(publish())
    for proc in procs:
        proc.join(10)
    last = max(t for _, _, t in done)
    latencies = [x * 1000 for _, lats, _ in done for x in lats]
    return Result(
        layer=layer_name,
        hubs=hubs,
        sent=count,
        received=[n for n, _, _ in done],
        send_seconds=sent_at - start,
        deliver_seconds=max(last - start, 1e-9),
        latencies_ms=latencies,
    )


def main() -> None:
    """Run both layers in both modes and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hubs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paced", type=int, default=2000, help="changes sent 2 ms apart (latency)")
    parser.add_argument("--burst", type=int, default=20000, help="changes sent back to back (throughput)")
    args = parser.parse_args()
    print(
        "| layer | mode | hubs | sent | delivered to slowest hub | group_send/s | received/s per hub "
        "| p50 ms | p99 ms | max ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with RedisServer() as redis:
        for hubs in args.hubs:
            for name in LAYERS:
                print(run(name, redis.url, hubs, args.paced, 0.002).line("paced 2 ms"), flush=True)
                print(run(name, redis.url, hubs, args.burst, 0.0).line("burst"), flush=True)


if __name__ == "__main__":
    main()
