"""Revision tracking: a gap in the consecutive revisions means a lost message, repaired from the database."""

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
        self._ahead: set[int] = set()
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

    def track(self, revision: int) -> None:
        """Note a dispatched revision; a gap schedules a resync after GAP_GRACE."""
        if revision <= self.applied:
            return
        if revision == self.applied + 1:
            self.applied = revision
            while self.applied + 1 in self._ahead:
                self.applied += 1
                self._ahead.discard(self.applied)
            return
        self._ahead.add(revision)
        if self._gap_task is None or self._gap_task.done():
            self._gap_task = asyncio.create_task(self._close_gap(), name="datastream-hub-gap")

    async def _close_gap(self) -> None:
        await asyncio.sleep(datastream_settings.GAP_GRACE)
        if self._ahead:
            logger.info("hub: revisions missing after %d; resyncing from the database", self.applied)
            await self.quietly()

    async def run(self) -> int:
        """Dispatch whatever changed after the last applied revision; return how many entries."""
        async with self._lock:
            top = await services.acurrent_revision()
            if top <= self.applied:
                return 0
            changed = await services.achanged_since(revision=self.applied, deletions=True)
            for entry in changed.values():
                self._dispatch(entry)
            self.applied = max(self.applied, top)
            self._ahead = {r for r in self._ahead if r > self.applied}
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
