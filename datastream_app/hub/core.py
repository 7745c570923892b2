"""The hub: the one channel-layer subscription of a process, fanning changes out to its streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer

from datastream_app.access import SYSTEM, Principal
from datastream_app.changes import MESSAGE_TYPE, Entry
from datastream_app.conf import datastream_settings
from datastream_app.hub.cache import FrameBuilder, FrameCache
from datastream_app.hub.health import Health
from datastream_app.hub.registry import Registry
from datastream_app.hub.resync import Resync
from datastream_app.hub.revocation import end_revoked_streams
from datastream_app.hub.subscription import Subscription
from datastream_app.publisher import GROUP, REFRESH_TYPE, publisher
from datastream_app.stores import store_for_key
from datastream_app.stores.model import ModelStore

logger = logging.getLogger("datastream_app.hub")

# Group membership expires on every layer; renew it well within the shortest expiry.
GROUP_RENEW_SECONDS = 60.0

# One hub per process: it owns the process's publisher loop and its one layer subscription.
_running: Hub | None = None


def _is_setting(key: str) -> bool:
    # Only settings are cached: an external store's keys must fail while it is
    # down, which only a read through the store can tell. (A prefix match over
    # the few configured stores: cheaper than caching the verdict.)
    return isinstance(store_for_key(key), ModelStore)


class Hub:
    """Receives change messages from the channel layer and fans them out in-process.

    Composed of a Registry (who listens to what), a FrameCache (current entries
    of watched settings keys), a Resync (gap tracking and database catch-up) and
    a Health (database and layer reachability); revoked tokens' streams are
    ended by the periodic loop.
    """

    def __init__(self, *, frame: FrameBuilder, layer_alias: str | None = None) -> None:
        self.layer_alias = layer_alias or datastream_settings.CHANNEL_LAYER
        self._frame = frame
        self.registry = Registry()
        self.cache = FrameCache(frame, _is_setting)
        self.health = Health()
        self.stats = {"received": 0, "resyncs": 0, "resynced_entries": 0}
        self.resync = Resync(self.dispatch, self.health, self.stats)
        # Called with a store alias when some process asks for that store to be listed now.
        self.on_refresh: Callable[[str], None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._channel: str | None = None
        self._layer: BaseChannelLayer | None = None

    # Lifecycle

    async def start(self) -> None:
        """Join the change group, read the current revision and start the loops."""
        global _running
        if _running is not None:
            raise RuntimeError("a hub is already running in this process")
        self._layer = get_channel_layer(self.layer_alias)
        if self._layer is None:
            raise RuntimeError(f"channel layer {self.layer_alias!r} is not configured")
        publisher.bind(asyncio.get_running_loop())
        await self.resync.start()
        await self._join()
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="datastream-hub-receive"),
            asyncio.create_task(self._resync_loop(), name="datastream-hub-resync"),
        ]
        _running = self

    async def stop(self) -> None:
        """Leave the group, stop the loops and end every subscription."""
        global _running
        self.resync.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await publisher.detach()
        if self._layer is not None and self._channel is not None:
            try:
                await self._layer.group_discard(GROUP, self._channel)
            except Exception:
                logger.warning("hub: could not leave the change group", exc_info=True)
        for sub in self.registry.all():
            sub.close()
        self.registry.clear()
        self.cache.clear()
        if _running is self:
            _running = None

    async def _join(self) -> None:
        assert self._layer is not None
        if self._channel is None:
            self._channel = await self._layer.new_channel(prefix="datastream-hub.")
        await self._layer.group_add(GROUP, self._channel)

    # What a stream uses

    def subscribe(
        self, keys: list[str] | None, principal: Principal = SYSTEM, *, deletions: bool = False
    ) -> Subscription:
        """Register a subscription for ``keys`` (None: every key the caller may read) before reading its snapshot.

        ``deletions``: the subscription also gets a tombstone when one of its keys is deleted.
        """
        return self.registry.add(frozenset(keys) if keys else None, principal, deletions=deletions)

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``; safe to call twice."""
        for key in self.registry.remove(sub):
            self.cache.drop(key)

    def snapshot(self, keys: list[str]) -> dict[str, Entry] | None:
        """The cached entries of ``keys``, or None unless every one is cached."""
        return self.cache.snapshot(keys)

    def cached(self, keys: list[str], since_revision: int) -> dict[str, Entry] | None:
        """The cached entries of ``keys`` (tombstones included) if they tell every change after ``since_revision``.

        None unless every key is cached and the hub has applied every revision
        up to ``since_revision`` (a resumed stream's snapshot then comes from
        the cache: anything newer is still on its way to the subscription).
        """
        if since_revision > self.resync.applied:
            return None
        return self.cache.entries(keys)

    def remember(self, entries: dict[str, Entry]) -> None:
        """Cache entries read from the database for watched keys (older than the cache: ignored)."""
        for key, entry in entries.items():
            if self.registry.watched(key):
                self.cache.put(entry)

    def frame_of(self, entries: dict[str, Entry]) -> bytes:
        """The serialised DataResponse of ``entries``, reusing cached frames."""
        return self.cache.frame_of(entries)

    # Fan-out

    def dispatch(self, entry: Entry) -> None:
        """Offer one change to every interested subscription, serialising it once."""
        self.resync.track(entry.revision)
        watched = self.registry.watched(entry.key)
        if entry.deleted:
            # The cache keeps a tombstone; only subscriptions that asked for tombstones get one.
            if watched:
                self.cache.put(entry)
            if self.registry.interested(entry.key):
                self.registry.offer_deletion(entry, self._frame(entry))
            return
        if not self.registry.interested(entry.key):
            return
        frame = self._frame(entry)
        if watched:
            self.cache.put(entry, frame)
        self.registry.offer(entry, frame)

    # Loops

    async def _receive_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                assert self._layer is not None and self._channel is not None
                message = await self._layer.receive(self._channel)
                self.health.set(layer_ok=True)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("hub: channel layer receive failed; retrying in %.1fs", backoff, exc_info=True)
                self.health.set(layer_ok=False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._join()
                except Exception:  # noqa: BLE001, S112 - the layer is still down; the loop retries
                    continue
                # Anything published while the layer was gone is only in the database now.
                await self.resync.quietly()
                continue
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == REFRESH_TYPE:
            if self.on_refresh is not None:
                self.on_refresh(str(message.get("store", "")))
            return
        if message.get("type") != MESSAGE_TYPE:
            return
        try:
            entry = Entry.from_message(message)
        except (KeyError, TypeError, ValueError):
            logger.warning("hub: malformed change message dropped: %r", message)
            return
        self.stats["received"] += 1
        self.resync.accept(entry)

    async def _resync_loop(self) -> None:
        since_renew = 0.0
        self.health.set(layer_ok=True)
        while True:
            interval = datastream_settings.RESYNC_INTERVAL
            await asyncio.sleep(interval)
            await self.resync.quietly()
            await end_revoked_streams(self.registry, self.unsubscribe)
            was_ok = self.health.layer_ok
            assert self._layer is not None
            now_ok = await self.health.probe_layer(self._layer)
            since_renew += interval
            if (now_ok and not was_ok) or since_renew >= GROUP_RENEW_SECONDS:
                # Back from an outage (or due for renewal): subscribe again in
                # case the layer lost our subscription with its connection.
                since_renew = 0.0
                try:
                    await self._join()
                except Exception:
                    logger.warning("hub: joining the change group failed", exc_info=True)
                    self.health.set(layer_ok=False)
