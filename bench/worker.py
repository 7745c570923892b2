"""A subscriber process: holds many streams to one system and timestamps every value it receives.

Run as ``python -m bench.worker``; it reads one JSON command per line on stdin
and answers each with one JSON line on stdout. Values are send timestamps
(``time.time_ns()`` at push), so latency is receipt time minus value on the
same machine's clock.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aetcd import rpc as etcdrpc  # type: ignore[import-untyped]

from bench.clients import ETCD_RANGE, ETCD_WATCH, OURS_SUBSCRIBE, EtcdClient, new_channel
from bench.common import ETCD, OURS
from protos import datastream_pb2

# etcd watch ids on a stream are subscriber * WATCH_SLOTS + key index + 1 (0 means "assign one").
WATCH_SLOTS = 16


class Subscriber:
    """One subscriber's keys and every (value, receipt time) it got, per key."""

    __slots__ = ("error", "keys", "ready_ns", "received", "revision", "since", "top")

    def __init__(self, keys: list[str], since: int = 0) -> None:
        self.keys = keys
        # Highest revision received (datastream), and the one its stream resumed from (0: a full snapshot).
        self.revision = since
        self.since = since
        self.received: dict[str, tuple[list[int], list[int]]] = {key: ([], []) for key in keys}
        # Highest value held per key: a subscriber "holds" an update once it got it or anything newer.
        self.top: dict[str, int] = dict.fromkeys(keys, -1)
        self.ready_ns = 0
        self.error = ""

    def record(self, key: str, value: int, now: int) -> None:
        """Remember that ``value`` of ``key`` arrived at ``now``."""
        held = self.received.get(key)
        if held is None:
            return
        top = max(self.top[key], value)
        self.top[key] = top
        # Store the running maximum so the list stays sorted for bisect.
        held[0].append(top)
        held[1].append(now)

    def first_holding(self, key: str, value: int) -> int:
        """When this subscriber first held ``value`` (or newer) of ``key``; 0 if never."""
        values, times = self.received[key]
        index = bisect.bisect_left(values, value)
        return times[index] if index < len(values) else 0

    def reset(self) -> None:
        """Forget receipts, keep what is held."""
        for values, times in self.received.values():
            values.clear()
            times.clear()


class Group:
    """Every subscriber of this process, on one system, spread over channels."""

    # Whether first_bytes is measured (datastream streams; etcd's Range and Watch are not counted).
    counts_bytes = False

    def __init__(self, target: str, subs: list[list[str]], per_channel: int) -> None:
        self.target = target
        self.specs = subs
        self.per_channel = per_channel
        self.subs: list[Subscriber] = []
        self.channels: list[grpc.aio.Channel] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.closing = False
        self._pending = 0
        self._settled = asyncio.Event()
        # Bytes of every stream's first message since the last open (what a (re)subscription costs on the wire).
        self.first_bytes = 0

    def _settle(self, sub: Subscriber, now: int, error: str = "") -> None:
        if sub.ready_ns or sub.error:
            if error and not sub.error:
                sub.error = error
            return
        if error:
            sub.error = error
        else:
            sub.ready_ns = now
        self._pending -= 1
        if self._pending <= 0:
            self._settled.set()

    async def open(self, start_ns: int, limit: int, timeout: float, since: list[int] | None = None) -> dict[str, Any]:
        """Open every subscription at once (at most ``limit`` connecting at a time) and wait for all.

        ``since``: per subscriber, the revision to resume from (datastream's since_revision).
        """
        self.closing = False
        self.first_bytes = 0
        self.subs = [Subscriber(keys, since[i] if since else 0) for i, keys in enumerate(self.specs)]
        self._pending = len(self.subs)
        self._settled = asyncio.Event()
        if not self.subs:
            self._settled.set()
        count = (len(self.subs) + self.per_channel - 1) // self.per_channel
        self.channels = [new_channel(self.target) for _ in range(count)]
        self._start(asyncio.Semaphore(max(1, limit)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)
        ready = [(s.ready_ns - start_ns) / 1e6 for s in self.subs if s.ready_ns]
        errors = Counter(s.error for s in self.subs if s.error)
        errors["not ready"] = sum(1 for s in self.subs if not s.ready_ns and not s.error)
        first_bytes = self.first_bytes if self.counts_bytes else None
        return {"ready_ms": ready, "errors": {k: v for k, v in errors.items() if v}, "bytes": first_bytes}

    def _start(self, gate: asyncio.Semaphore) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Cancel every stream and close the connections (not counted as errors)."""
        self.closing = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(*(channel.close() for channel in self.channels), return_exceptions=True)
        self.tasks = []
        self.channels = []

    def errors(self) -> dict[str, int]:
        """Streams that failed or ended on their own, by reason."""
        return dict(Counter(s.error for s in self.subs if s.error))

    def latencies(self, updates: list[tuple[str, int]]) -> dict[str, Any]:
        """Per update: each watching subscriber's delay (µs) until it held that value or newer."""
        by_key: dict[str, list[Subscriber]] = {}
        for sub in self.subs:
            for key in sub.keys:
                by_key.setdefault(key, []).append(sub)
        result: list[list[int]] = []
        missing: list[int] = []
        for key, sent in updates:
            delays = []
            lost = 0
            for sub in by_key.get(key, ()):
                at = sub.first_holding(key, sent)
                if at:
                    delays.append((at - sent) // 1000)
                else:
                    lost += 1
            result.append(delays)
            missing.append(lost)
        # Values received since the last reset: below N per update where the server coalesced.
        received = sum(len(values) for sub in self.subs for values, _ in sub.received.values())
        return {"lat_us": result, "missing": missing, "received": received, "errors": self.errors()}

    def lagging(self, expect: dict[str, int]) -> int:
        """How many (subscriber, key) pairs do not yet hold the expected value."""
        return sum(1 for sub in self.subs for key in sub.keys if key in expect and sub.top[key] < expect[key])


class OursGroup(Group):
    """Subscribe streams on the datastream service, ``per_channel`` streams per connection."""

    counts_bytes = True

    def _start(self, gate: asyncio.Semaphore) -> None:
        self.tasks = [
            asyncio.create_task(self._stream(self.channels[i // self.per_channel], sub, gate))
            for i, sub in enumerate(self.subs)
        ]

    async def _stream(self, channel: grpc.aio.Channel, sub: Subscriber, gate: asyncio.Semaphore) -> None:
        # Raw bytes in and out: the receipt time is taken before parsing.
        method = channel.unary_stream(OURS_SUBSCRIBE, request_serializer=None, response_deserializer=None)
        request = datastream_pb2.DataRequest(keys=sub.keys, since_revision=sub.since).SerializeToString()
        parse = datastream_pb2.DataResponse.FromString
        await gate.acquire()
        gated = True
        try:
            call = method(request)
            async for raw in call:
                now = time.time_ns()
                for key, data in parse(raw).data.items():
                    sub.record(key, int(data.value), now)
                    if data.revision > sub.revision:
                        sub.revision = data.revision
                if gated:
                    self.first_bytes += len(raw)
                    gated = False
                    gate.release()
                    self._settle(sub, now)
            if not self.closing:
                self._settle(sub, 0, "stream ended by server")
        except grpc.aio.AioRpcError as error:
            if not self.closing:
                self._settle(sub, 0, error.code().name)
        except asyncio.CancelledError:
            if not self.closing:
                self._settle(sub, 0, "cancelled locally")
            raise
        finally:
            if gated:
                gate.release()


class EtcdGroup(Group):
    """etcd watches: each subscriber reads its keys, then watches them from the next revision.

    The watches of ``per_channel`` subscribers share one Watch stream per
    connection, as etcd clients multiplex them. A subscriber on ``WATCH_SLOTS``
    keys or more reads them with one Range and holds one watch over that range:
    the harness gives such subscribers keys that are contiguous in etcd's key
    order, as a client watching a prefix would hold them.
    """

    def __init__(self, target: str, subs: list[list[str]], per_channel: int) -> None:
        super().__init__(target, subs, per_channel)
        # Range subscribers: the Range answers and the watch confirmations are counted as first bytes.
        self.counts_bytes = bool(subs) and all(ranged(keys) for keys in subs)
        # Per subscriber (by id): watches not yet confirmed, and the gate slot it holds meanwhile.
        self._unconfirmed: dict[int, int] = {}
        self._gates: dict[int, asyncio.Semaphore] = {}

    def _start(self, gate: asyncio.Semaphore) -> None:
        self.tasks = []
        self._unconfirmed = {}
        self._gates = {}
        for c, channel in enumerate(self.channels):
            members = self.subs[c * self.per_channel : (c + 1) * self.per_channel]
            queue: asyncio.Queue[etcdrpc.WatchRequest] = asyncio.Queue()
            self.tasks.append(asyncio.create_task(self._watch_stream(channel, members, queue)))
            kv = EtcdClient(self.target, channel)
            self.tasks.extend(
                asyncio.create_task(self._subscribe(kv, slot, sub, queue, gate)) for slot, sub in enumerate(members)
            )

    async def _subscribe(
        self,
        kv: EtcdClient,
        slot: int,
        sub: Subscriber,
        queue: asyncio.Queue[etcdrpc.WatchRequest],
        gate: asyncio.Semaphore,
    ) -> None:
        await gate.acquire()
        try:
            if ranged(sub.keys):
                revision, values, watches = await self._read_range(kv, slot, sub.keys)
            else:
                revision, values = await kv.read(sub.keys)
                watches = [
                    etcdrpc.WatchCreateRequest(
                        key=key.encode(), start_revision=revision + 1, watch_id=slot * WATCH_SLOTS + index + 1
                    )
                    for index, key in enumerate(sub.keys)
                ]
        except grpc.aio.AioRpcError as error:
            gate.release()
            if not self.closing:
                self._settle(sub, 0, error.code().name)
            return
        now = time.time_ns()
        for key, value in values.items():
            sub.record(key, int(value), now)
        # The gate slot is given back when the last watch is confirmed.
        self._unconfirmed[id(sub)] = len(watches)
        self._gates[id(sub)] = gate
        for create in watches:
            queue.put_nowait(etcdrpc.WatchRequest(create_request=create))

    async def _read_range(
        self, kv: EtcdClient, slot: int, keys: list[str]
    ) -> tuple[int, dict[str, bytes], list[etcdrpc.WatchCreateRequest]]:
        """One Range over ``keys`` (contiguous in key order), and the one watch over that range."""
        first, end = min(keys).encode(), max(keys).encode() + b"\0"
        method = kv.channel.unary_unary(ETCD_RANGE, request_serializer=None, response_deserializer=None)
        raw = await method(etcdrpc.RangeRequest(key=first, range_end=end).SerializeToString(), timeout=30)
        self.first_bytes += len(raw)
        response = etcdrpc.RangeResponse.FromString(raw)
        revision = response.header.revision
        values = {item.key.decode(): item.value for item in response.kvs}
        watch = etcdrpc.WatchCreateRequest(
            key=first, range_end=end, start_revision=revision + 1, watch_id=slot * WATCH_SLOTS + 1
        )
        return revision, values, [watch]

    async def _watch_stream(
        self, channel: grpc.aio.Channel, members: list[Subscriber], queue: asyncio.Queue[etcdrpc.WatchRequest]
    ) -> None:
        method = channel.stream_stream(
            ETCD_WATCH, request_serializer=etcdrpc.WatchRequest.SerializeToString, response_deserializer=None
        )

        async def requests() -> AsyncIterator[etcdrpc.WatchRequest]:
            while True:
                yield await queue.get()

        parse = etcdrpc.WatchResponse.FromString
        put = etcdrpc.Event.EventType.PUT
        try:
            call = method(requests())
            async for raw in call:
                now = time.time_ns()
                response = parse(raw)
                sub = members[(response.watch_id - 1) // WATCH_SLOTS]
                if response.created:
                    self.first_bytes += len(raw)
                    left = self._unconfirmed.get(id(sub), 0) - 1
                    self._unconfirmed[id(sub)] = left
                    if left == 0:
                        self._settle(sub, now)
                if response.canceled and not self.closing:
                    self._settle(sub, 0, "watch cancelled by server")
                for event in response.events:
                    if event.type == put:
                        sub.record(event.kv.key.decode(), int(event.kv.value), now)
            if not self.closing:
                for sub in members:
                    self._settle(sub, 0, "stream ended by server")
        except grpc.aio.AioRpcError as error:
            if not self.closing:
                for sub in members:
                    self._settle(sub, 0, error.code().name)

    def _settle(self, sub: Subscriber, now: int, error: str = "") -> None:
        gate = self._gates.pop(id(sub), None)
        if gate is not None:
            gate.release()
        super()._settle(sub, now, error)


def ranged(keys: list[str]) -> bool:
    """Whether an etcd subscriber on ``keys`` reads and watches them as one range (too many for a watch each)."""
    return len(keys) >= WATCH_SLOTS


class Worker:
    """Dispatches the harness's commands to the current group."""

    def __init__(self) -> None:
        self.group: Group | None = None
        # Per subscriber, the revision it held when "drop" closed its stream (None: not dropped).
        self.held: list[int] | None = None

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command and return its JSON answer."""
        op = command["op"]
        if op == "open":
            if self.group is not None:
                await self.group.close()
            cls = OursGroup if command["system"] == OURS else EtcdGroup
            assert command["system"] in (OURS, ETCD)
            self.group = cls(command["target"], command["subs"], command["per_channel"])
            return await self.group.open(command["start_ns"], command["limit"], command["timeout"])
        group = self.group
        if group is None:
            return {"error": "no group open"}
        if op == "drop":
            # Every stream closed, to be reopened by "reconnect" (changes can be made meanwhile).
            self.held = [sub.revision for sub in group.subs]
            await group.close()
            return {}
        if op == "reconnect":
            # resume: each stream asks from the revision it held (datastream only).
            held = self.held if self.held is not None else [sub.revision for sub in group.subs]
            self.held = None
            await group.close()
            since = held if command.get("resume") else None
            return await group.open(command["start_ns"], command["limit"], command["timeout"], since)
        if op == "reset":
            for sub in group.subs:
                sub.reset()
            return {}
        if op == "wait":
            expect: dict[str, int] = command["expect"]
            deadline = time.monotonic() + command["timeout"]
            lagging = group.lagging(expect)
            while lagging and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                lagging = group.lagging(expect)
            return {"lagging": lagging}
        if op == "collect":
            return group.latencies([(key, int(sent)) for key, sent in command["updates"]])
        if op == "close":
            errors = group.errors()
            await group.close()
            self.group = None
            return {"errors": errors}
        return {"error": f"unknown op {op!r}"}


async def main() -> None:
    """Serve commands from stdin until it closes or says exit."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command["op"] == "exit":
                break
            try:
                answer = await worker.handle(command)
            except Exception as error:  # the harness reports it; the worker keeps serving
                answer = {"error": f"{type(error).__name__}: {error}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        if worker.group is not None:
            await worker.group.close()


if __name__ == "__main__":
    asyncio.run(main())
