"""Changes reach subscriptions in revision order; a gap means a lost message, repaired from the database.

Two writers' messages can reach a process out of revision order (each is
published on its own commit). A change that arrives ahead of a gap is held
until the gap closes (the missing message arrives, or GAP_GRACE later the
database is read), so a subscriber holding revision N has every change up to
N of its keys: N is a safe point to resume from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from datastream_app import services
from datastream_app.changes import Entry
from datastream_app.conf import datastream_settings
from datastream_app.hub.health import Health

logger = logging.getLogger("datastream_app.hub")


class Resync:
    """The highest revision applied without a gap, and the database reads that close gaps."""

    def __init__(self, dispatch: Callable[[Entry], None], health: Health, stats: dict[str, int]) -> None:
        self._dispatch = dispatch
        self._health = health
        self._stats = stats
        self.applied = 0
        # Changes that arrived ahead of a gap, by revision, waiting for it to close.
        self._held: dict[int, Entry] = {}
        self._gap_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start from the database's current revision (changes before it are in every snapshot)."""
        try:
            self.applied = await services.acurrent_revision()
            self._health.set(database_ok=True)
        except Exception:
            logger.exception("hub: database unreachable at start; will resync when it is back")
            self._health.set(database_ok=False)

    def stop(self) -> None:
        """Cancel a pending gap repair."""
        if self._gap_task is not None:
            self._gap_task.cancel()

    def accept(self, entry: Entry) -> None:
        """Dispatch a change from the layer in revision order; one ahead of a gap waits for the gap to close."""
        if entry.revision > self.applied + 1:
            self._held[entry.revision] = entry
            if self._gap_task is None or self._gap_task.done():
                self._gap_task = asyncio.create_task(self._close_gap(), name="datastream-hub-gap")
            return
        self._dispatch(entry)
        self._release()

    def track(self, revision: int) -> None:
        """Note a dispatched revision: the next one in order moves ``applied`` on."""
        if revision == self.applied + 1:
            self.applied = revision

    def _release(self) -> None:
        # Held changes become dispatchable once every revision before them was.
        while (entry := self._held.pop(self.applied + 1, None)) is not None:
            self._dispatch(entry)

    async def _close_gap(self) -> None:
        await asyncio.sleep(datastream_settings.GAP_GRACE)
        if self._held:
            logger.info("hub: revisions missing after %d; resyncing from the database", self.applied)
            await self.quietly()

    async def run(self) -> int:
        """Dispatch whatever changed after the last applied revision; return how many entries."""
        async with self._lock:
            top = await services.acurrent_revision()
            if top <= self.applied:
                return 0
            changed = await services.achanged_since(revision=self.applied, deletions=True)
            # In revision order, as the layer would have delivered them.
            for entry in sorted(changed.values(), key=lambda entry: entry.revision):
                self._dispatch(entry)
            self.applied = max(self.applied, top)
            # Held changes up to ``top`` are in what was just read (or older than it).
            self._held = {revision: entry for revision, entry in self._held.items() if revision > self.applied}
            self._release()
            self._stats["resyncs"] += 1
            self._stats["resynced_entries"] += len(changed)
            return len(changed)

    async def quietly(self) -> None:
        """run(), recording the database's health instead of raising."""
        try:
            await self.run()
            self._health.set(database_ok=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("hub: resync failed; retrying", exc_info=True)
            self._health.set(database_ok=False)
