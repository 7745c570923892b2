"""Watcher lease takeover of an external store: readers never see the store as stale while another process takes over.

Two ``StoreWatchers`` with different lease holders stand for two gRPC
processes; a reader reads the store's keys throughout and counts failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from datastream_app import services
from datastream_app.exceptions import Unavailable
from datastream_app.models import StoreStatus
from datastream_app.stores import get_stores
from datastream_app.stores.memory import MemoryStore
from datastream_app.stores.mirrored import MirroredStore
from datastream_app.stores.watch import StoreWatchers

pytestmark = pytest.mark.django_db(transaction=True)

POLL = 0.2
STALE = 5.0
STORES = {
    "default": {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""},
    "mem": {
        "BACKEND": "datastream_app.stores.memory.MemoryStore",
        "PREFIX": "mem/",
        "OPTIONS": {"poll_interval": POLL, "stale_after": STALE, "keys": {"mem/limit": ("int", 5)}},
    },
}


@pytest.fixture
def store(transactional_db: object) -> Iterator[MirroredStore]:
    MemoryStore.forget("mem")
    with override_settings(DATASTREAM={"STORES": STORES}):
        (mem,) = [s for s in get_stores() if s.alias == "mem"]
        assert isinstance(mem, MirroredStore)
        yield mem
    MemoryStore.forget("mem")


def _status() -> tuple[str, object]:
    status = StoreStatus.objects.filter(alias="mem").first()
    return ("", None) if status is None else (status.leader, status.checked_at)


class Reader:
    """Reads the store's key in a loop, counting reads and failures."""

    def __init__(self) -> None:
        self.reads = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        read = sync_to_async(services.get_entries, thread_sensitive=False)
        while not self._stop.is_set():
            try:
                await read(keys=["mem/limit"])
            except Unavailable as exc:
                self.failures.append(exc.message)
            self.reads += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def _until(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await sync_to_async(predicate, thread_sensitive=False)():
            await asyncio.sleep(0.01)


async def _past_staleness_of_the_first_listing(first_listing: object) -> None:
    # Read on past the moment the first holder's listing goes stale: that is
    # where a survivor that lists too late leaves readers without the store.
    def stale_moment_passed() -> bool:
        from django.utils import timezone

        return (timezone.now() - first_listing).total_seconds() > STALE + 2 * POLL  # type: ignore[operator]

    await _until(stale_moment_passed)


async def test_takeover__first_watcher_stops_in_order__no_read_fails(store):
    first, second = StoreWatchers(holder="first"), StoreWatchers(holder="second")
    await first.start()
    await _until(lambda: _status()[0] == "first" and _status()[1] is not None)
    await second.start()
    reader = Reader()
    reader.start()
    try:
        await first.stop()
        _, listed_by_first = await sync_to_async(_status, thread_sensitive=False)()
        await _until(lambda: _status()[0] == "second" and _status()[1] != listed_by_first)
        await _past_staleness_of_the_first_listing(listed_by_first)
    finally:
        await reader.stop()
        await second.stop()

    assert reader.reads > 0
    assert reader.failures == []


async def test_takeover__first_holder_vanishes_without_releasing__survivor_lists_before_readers_see_staleness(store):
    # The first holder listed once and then died (no release): the survivor
    # can take over only once the lease lapses, which must be before staleness.
    await sync_to_async(store.acquire_lease, thread_sensitive=False)("vanished")
    await sync_to_async(store.refresh, thread_sensitive=False)()
    _, listed_by_first = await sync_to_async(_status, thread_sensitive=False)()
    survivor = StoreWatchers(holder="survivor")
    reader = Reader()
    reader.start()
    await survivor.start()
    try:
        await _until(lambda: _status()[0] == "survivor" and _status()[1] != listed_by_first)
        await _past_staleness_of_the_first_listing(listed_by_first)
    finally:
        await reader.stop()
        await survivor.stop()

    assert reader.reads > 0
    assert reader.failures == []


def test_lease_seconds__not_shorter_than_stale_after__refused_naming_the_store():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=r"store 'leasy': lease_seconds \(3\) must be .* shorter"):
        MemoryStore(alias="leasy", prefix="leasy/", poll_interval=1, stale_after=3, lease_seconds=3)
    MemoryStore.forget("leasy")
