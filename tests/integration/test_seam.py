"""The snapshot/stream seam of Subscribe: a change committed between subscribing and reading the snapshot is not lost.

The servicer awaits an injectable ``seam`` exactly there; this module's hook
installs one that commits a change and returns only once the hub has
dispatched it (another subscriber holds it). Reading the snapshot before
registering with the hub would lose that change; these tests fail then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from datastream_app.hub import Hub
from datastream_app.rpc.servicer import DataServicer, add_data_servicer
from protos import datastream_pb2
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)

# Only the stream itself may deliver: no periodic or gap-triggered resync.
NO_RESYNC = {"RESYNC_INTERVAL": 3600.0, "GAP_GRACE": 3600.0}
HOOK = {"ROOT_HANDLERS_HOOK": "tests.integration.test_seam.seam_handlers"}


class Seam:
    """Runs the next armed action inside the next Subscribe's seam (a no-op otherwise)."""

    def __init__(self) -> None:
        self.action: Callable[[], Awaitable[None]] | None = None
        self.ran = 0

    async def __call__(self) -> None:
        action, self.action = self.action, None
        if action is not None:
            await action()
            self.ran += 1


SEAM = Seam()


def seam_handlers(server: grpc.aio.Server, hub: Hub) -> None:
    """The ROOT_HANDLERS_HOOK of these tests: the DataService with SEAM in Subscribe."""
    add_data_servicer(DataServicer(hub, seam=SEAM), server)


@pytest.mark.parametrize(
    "observed",
    [
        # The key has a subscriber: the new stream's snapshot comes from the hub's cache.
        ("max_connections",),
        # Only an every-key subscriber: the snapshot is read from the database.
        (),
    ],
    ids=["snapshot-from-hub-cache", "snapshot-from-database"],
)
@pytest.mark.parametrize("resumed", [False, True], ids=["full", "since-revision"])
async def test_subscribe__change_committed_inside_the_seam__the_subscriber_ends_with_it(demo, observed, resumed):
    async with serving(GRPC_FRAMEWORK=HOOK, DATASTREAM=NO_RESYNC) as (_, stub):
        observer = stub.Subscribe(request(*observed))
        await observer.read()
        # Resumed: the stream's first message holds only what changed after the revision held now.
        held = max(d.revision for d in (await stub.Sync(request())).data.values()) if resumed else 0

        async def commit_and_wait_for_dispatch() -> None:
            await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"11"))
            async with asyncio.timeout(10):
                while True:
                    message = await observer.read()
                    if message.data.get("max_connections", datastream_pb2.Data()).value == b"11":
                        return

        ran_before = SEAM.ran
        SEAM.action = commit_and_wait_for_dispatch
        call = stub.Subscribe(datastream_pb2.DataRequest(keys=["max_connections", "rate_limit"], since_revision=held))
        first = await call.read()
        assert SEAM.ran == ran_before + 1
        assert first.resumed_from == held
        view = {key: data.value for key, data in first.data.items()}
        # A later change to another key of the stream: once it arrives, every
        # change before it that the stream was going to deliver has arrived.
        await stub.PushUpdate(datastream_pb2.Data(key="rate_limit", value=b"2000"))
        async with asyncio.timeout(10):
            while view.get("rate_limit") != b"2000":
                message = await call.read()
                view.update({key: data.value for key, data in message.data.items()})
        call.cancel()
        observer.cancel()

    assert view["max_connections"] == b"11"
