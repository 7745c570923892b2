"""Runs the watcher of every external store in this process, and asks other processes to refresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any

from channels.db import DatabaseSyncToAsync

from datastream_app.exceptions import Unavailable
from datastream_app.publisher import publisher, refresh_message
from datastream_app.stores import get_stores
from datastream_app.stores.mirrored import PROCESS_ID, MirroredStore

logger = logging.getLogger(__name__)


def request_refresh(alias: str) -> None:
    """Ask whichever process watches ``alias`` to list it now (webhooks, management command)."""
    publisher.send(refresh_message(alias))


def mirrored_stores() -> list[MirroredStore]:
    """The configured external stores."""
    return [store for store in get_stores() if isinstance(store, MirroredStore)]


class StoreWatchers:
    """One refresh loop per external store; only the lease holder of a store lists it.

    ``holder`` names this set of watchers in the lease (default: this process).
    """

    def __init__(self, *, holder: str = PROCESS_ID) -> None:
        self.holder = holder
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self.stores = {store.alias: store for store in mirrored_stores()}

    async def start(self) -> None:
        """Start a loop for each external store."""
        for alias, store in self.stores.items():
            self._wake[alias] = asyncio.Event()
            self._tasks[alias] = asyncio.create_task(self._loop(store), name=f"datastream-watch-{alias}")

    async def stop(self) -> None:
        """Stop the loops and hand the leases over (the other processes are asked to list at once)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for store in self.stores.values():
            try:
                await DatabaseSyncToAsync(store.release_lease, thread_sensitive=False)(self.holder)
                request_refresh(store.alias)
            except Exception:
                logger.warning("store %s: could not release the watcher lease", store.alias, exc_info=True)
            await asyncio.to_thread(store.close)

    def wake(self, alias: str) -> None:
        """Refresh ``alias`` now instead of at its next poll."""
        event = self._wake.get(alias)
        if event is not None:
            event.set()

    async def _loop(self, store: MirroredStore) -> None:
        acquire = partial(DatabaseSyncToAsync(store.acquire_lease, thread_sensitive=False), self.holder)
        refresh = DatabaseSyncToAsync(store.refresh, thread_sensitive=False)
        waiting: asyncio.Future[Any] | None = None
        backoff = store.poll_interval
        while True:
            delay = store.poll_interval
            try:
                if await acquire():
                    changed = await refresh()
                    if changed:
                        logger.info("store %s: %d keys changed", store.alias, changed)
                backoff = store.poll_interval
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                logger.warning("%s; retrying in %.1fs", exc.message, backoff)
                delay, backoff = backoff, min(backoff * 2, 60.0)
            except Exception:
                logger.exception("store %s: refresh failed", store.alias)
            event = self._wake[store.alias]
            # The backend's own wait (LISTEN/NOTIFY, say) runs in a thread that
            # cannot be cancelled; keep one and reuse it until it returns.
            if waiting is None or waiting.done():
                waiting = asyncio.ensure_future(asyncio.to_thread(store.wait, delay))
            woken: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait({waiting, woken}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            event.clear()
