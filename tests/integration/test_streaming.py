"""Nothing is lost: the snapshot/stream seam, slow subscribers and a channel layer that drops messages."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer

from datastream_app.models import Setting
from protos import datastream_pb2, datastream_pb2_grpc
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)

# Only the stream itself may deliver: no periodic or gap-triggered resync.
NO_RESYNC = {"RESYNC_INTERVAL": 3600.0, "GAP_GRACE": 3600.0}


class LossyLayer(InMemoryChannelLayer):
    """An in-memory layer that loses every third message sent to a group."""

    sent = 0

    async def group_send(self, group: str, message: dict) -> None:
        LossyLayer.sent += 1
        if LossyLayer.sent % 3 == 0:
            return None
        return await super().group_send(group, message)


class DroppingLayer(InMemoryChannelLayer):
    """An in-memory layer that loses every message sent to a group, like a partitioned broker."""

    async def group_send(self, group: str, message: dict) -> None:
        return None


async def follow(stub, key: str, until: bytes, seen: list[tuple[int, bytes]], timeout: float = 30.0) -> None:
    """Subscribe to ``key`` and record (revision, value) until ``until`` arrives."""
    call = stub.Subscribe(request(key))
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    raise AssertionError("stream ended early")
                data = message.data[key]
                seen.append((data.revision, data.value))
                if data.value == until:
                    return
    finally:
        call.cancel()


async def test_subscribe__subscribers_join_during_pushes__every_one_ends_on_the_last_value(demo):
    async with serving(DATASTREAM=NO_RESYNC) as (service, stub):
        total = 150
        last = str(total).encode()

        async def push_all() -> None:
            for i in range(1, total + 1):
                await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=str(i).encode()))

        async def late_subscriber(seen: list[tuple[int, bytes]]) -> None:
            # Join at a random point of the push loop, so some land on the seam.
            await asyncio.sleep(random.uniform(0, 0.6))
            await follow(stub, "max_connections", last, seen)

        # Below every pushed value, so values must only ever grow.
        await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"0"))
        views: list[list[tuple[int, bytes]]] = [[] for _ in range(30)]
        await asyncio.gather(push_all(), *(late_subscriber(seen) for seen in views))

    for seen in views:
        assert seen[-1][1] == last
        revisions = [revision for revision, _ in seen]
        # Never older than what the subscriber already holds, never repeated.
        assert revisions == sorted(set(revisions))
        values = [int(value) for _, value in seen]
        assert values == sorted(values)
    assert service.hub.stats["resyncs"] == 0


async def test_subscribe__stalled_subscriber__bounded_backlog_and_latest_value_at_the_end(demo):
    async with serving(DATASTREAM=NO_RESYNC) as (_, stub):
        stalled = stub.Subscribe(request("blob"))
        await stalled.read()
        pushes = 60
        big = 512 * 1024
        for i in range(pushes):
            # Distinct 512 KiB values: far more than the HTTP/2 windows
            # hold, so the server's writes to this stream block.
            value = bytes([i % 256]) * big
            await stub.PushUpdate(datastream_pb2.Data(key="blob", value=value))
        # The stalled stream now reads everything that is left.
        received = []
        async with asyncio.timeout(30):
            while True:
                message = await stalled.read()
                received.append(message.data["blob"].value)
                if message.data["blob"].value == bytes([(pushes - 1) % 256]) * big:
                    break
        stalled.cancel()

    # The frames the transport took before the writes blocked (socket buffers
    # and HTTP/2 windows: 8 of these 512 KiB frames on the reference machine),
    # then the latest value coalesced: a backlog would deliver all 60.
    assert len(received) <= pushes // 3
    assert received[-1] == bytes([(pushes - 1) % 256]) * big


async def test_subscribe__slow_subscriber__does_not_hold_up_a_fast_one(demo):
    async with (
        serving(DATASTREAM=NO_RESYNC) as (service, fast_stub),
        # A connection of its own: the slow subscriber's full windows must not be the fast one's.
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as slow_chan,
    ):
        slow = datastream_pb2_grpc.DataServiceStub(slow_chan).Subscribe(request("blob"))
        await slow.read()
        fast = fast_stub.Subscribe(request("blob"))
        await fast.read()
        for i in range(40):
            await fast_stub.PushUpdate(datastream_pb2.Data(key="blob", value=bytes([i]) * (512 * 1024)))
            message = await asyncio.wait_for(fast.read(), 10)
            # The fast subscriber gets each change while the slow one never reads.
            assert message.data["blob"].value[:1] == bytes([i])
        slow.cancel()
        fast.cancel()


async def test_hub__lossy_layer_under_concurrent_saves__subscribers_converge_on_the_store(demo):
    layers = {"default": {"BACKEND": "tests.integration.test_streaming.LossyLayer"}}
    repair = {"RESYNC_INTERVAL": 0.2, "GAP_GRACE": 0.05}
    async with serving(CHANNEL_LAYERS=layers, DATASTREAM=repair) as (service, stub):
        keys = ["max_connections", "rate_limit", "ratio"]
        call = stub.Subscribe(request(*keys))
        view = {k: v.value for k, v in (await call.read()).data.items()}

        def burst() -> None:
            import concurrent.futures

            def save(i: int) -> None:
                setting = Setting.objects.get(key=keys[i % 3])
                setting.value = str(i).encode() if keys[i % 3] != "ratio" else f"{i}.5".encode()
                setting.save()

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(save, range(90)))

        await sync_to_async(burst, thread_sensitive=False)()
        store = {s.key: bytes(s.value) async for s in Setting.objects.filter(key__in=keys)}

        async with asyncio.timeout(15):
            while view != store:
                message = await call.read()
                view.update({k: v.value for k, v in message.data.items()})
        call.cancel()

    assert view == store
    # The layer really dropped messages, and the hub repaired the gaps.
    assert service.hub.stats["received"] < 90
    assert service.hub.stats["resyncs"] > 0


async def test_hub__layer_drops_everything__subscriber_still_converges_from_the_database(demo):
    layers = {"default": {"BACKEND": "tests.integration.test_streaming.DroppingLayer"}}
    async with serving(CHANNEL_LAYERS=layers, DATASTREAM={"RESYNC_INTERVAL": 0.1}) as (service, stub):
        call = stub.Subscribe(request("max_connections"))
        await call.read()
        await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"77"))
        message = await asyncio.wait_for(call.read(), 10)
        call.cancel()

    assert message.data["max_connections"].value == b"77"
    assert service.hub.stats["received"] == 0
