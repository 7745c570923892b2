"""The fan-out hub: the one channel-layer subscription of a process.

Every change message arrives here once, is serialised once, and is offered to
each local subscription interested in its key. A subscription keeps at most one
pending frame per key (settings are state, not events), so a slow stream
coalesces to the latest values instead of growing a backlog.

Revisions are global and consecutive, so a gap shows a lost message: after a
short grace the hub reads what changed from the database. A periodic check
does the same for a lost *last* message, which no later revision reveals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from channels.db import DatabaseSyncToAsync
from channels.layers import BaseChannelLayer, get_channel_layer

from datastream_app import services
from datastream_app.access import SYSTEM, Principal, invalid_tokens
from datastream_app.changes import MESSAGE_TYPE, Entry
from datastream_app.conf import datastream_settings
from datastream_app.publisher import GROUP, publisher
from datastream_app.stores import store_for_key
from datastream_app.stores.model import ModelStore

REFRESH_TYPE = "datastream.refresh"

logger = logging.getLogger(__name__)

# Group membership expires on every layer; renew it well within the shortest expiry.
GROUP_RENEW_SECONDS = 60.0
# A group nobody joins: sending to it tells whether the layer is reachable.
PROBE_GROUP = "datastream.probe"


class Subscription:
    """One stream's view of the hub: pending frames per key, coalesced to the latest."""

    __slots__ = ("_waiter", "close_reason", "closed", "keys", "pending", "principal", "sent")

    def __init__(self, keys: frozenset[str] | None, principal: Principal = SYSTEM) -> None:
        self.keys = keys
        self.principal = principal
        # Why the hub ended this stream: (grpc status name, message); None: shutdown.
        self.close_reason: tuple[str, str] | None = None
        self.pending: dict[str, tuple[int, bytes]] = {}
        # Highest revision already delivered (or covered by the snapshot) per key.
        self.sent: dict[str, int] = {}
        # The stream's wake-up while it waits: a bare future, not an Event (an
        # Event carries a deque of waiters; there are thousands of streams).
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def wants(self, key: str) -> bool:
        """Whether this subscription covers ``key``."""
        return self.keys is None or key in self.keys

    def offer(self, key: str, revision: int, frame: bytes, secret: bool = False) -> None:
        """Queue ``frame`` unless as new a one was sent or queued for ``key``, or the caller may not see it."""
        if revision <= self.sent.get(key, 0):
            return
        if secret and not self.principal.can_read_secret(key):
            return
        if self.keys is None and not self.principal.can_read(key):
            return
        queued = self.pending.get(key)
        if queued is None or queued[0] < revision:
            self.pending[key] = (revision, frame)
            self._wake()

    def prime(self, snapshot: dict[str, Entry]) -> None:
        """Mark the snapshot as delivered and drop queued frames it already covers."""
        for key, entry in snapshot.items():
            self.sent[key] = max(self.sent.get(key, 0), entry.revision)
            queued = self.pending.get(key)
            if queued is not None and queued[0] <= entry.revision:
                del self.pending[key]

    async def next_frame(self) -> bytes | None:
        """Wait for pending changes and return them as one serialised DataResponse (None: closed)."""
        while not self.pending:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        pending, self.pending = self.pending, {}
        for key, (revision, _) in pending.items():
            self.sent[key] = revision
        if len(pending) == 1:
            return next(iter(pending.values()))[1]
        # Revision order within the merged message, for readers that care.
        return b"".join(frame for _, frame in sorted(pending.values(), key=lambda item: item[0]))

    def close(self, reason: tuple[str, str] | None = None) -> None:
        """Wake the waiting stream so it ends (with ``reason`` as its status, if given)."""
        self.close_reason = reason
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Hub:
    """Receives change messages from the channel layer and fans them out in-process."""

    def __init__(self, *, layer_alias: str | None = None) -> None:
        self.layer_alias = layer_alias or datastream_settings.CHANNEL_LAYER
        self._by_key: dict[str, set[Subscription]] = {}
        # key -> (entry, its serialised frame once computed)
        self._cache: dict[str, tuple[Entry, bytes | None]] = {}
        self._by_token: dict[int, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._channel: str | None = None
        self._layer: BaseChannelLayer | None = None
        self._applied = 0
        self._ahead: set[int] = set()
        self._gap_task: asyncio.Task[None] | None = None
        self._resync_lock = asyncio.Lock()
        self.layer_ok = False
        self.database_ok = False
        self.on_health_change: Callable[[Hub], None] | None = None
        # Called with a store alias when some process asks for that store to be listed now.
        self.on_refresh: Callable[[str], None] | None = None
        self.stats = {"received": 0, "resyncs": 0, "resynced_entries": 0}

    # Lifecycle

    async def start(self) -> None:
        """Join the change group, read the current revision and start the loops."""
        self._layer = get_channel_layer(self.layer_alias)
        if self._layer is None:
            raise RuntimeError(f"channel layer {self.layer_alias!r} is not configured")
        publisher.bind(asyncio.get_running_loop())
        try:
            self._applied = await services.acurrent_revision()
            self._set_health(database_ok=True)
        except Exception:
            logger.exception("hub: database unreachable at start; will resync when it is back")
            self._set_health(database_ok=False)
        await self._join()
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="datastream-hub-receive"),
            asyncio.create_task(self._resync_loop(), name="datastream-hub-resync"),
        ]

    async def stop(self) -> None:
        """Leave the group, stop the loops and end every subscription."""
        for task in [*self._tasks, self._gap_task]:
            if task is not None:
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
        for sub in self.subscriptions():
            sub.close()
        self._all.clear()
        self._by_key.clear()
        self._cache.clear()
        self._by_token.clear()

    async def _join(self) -> None:
        assert self._layer is not None
        if self._channel is None:
            self._channel = await self._layer.new_channel(prefix="datastream-hub.")
        await self._layer.group_add(GROUP, self._channel)

    # Subscriptions

    def subscribe(self, keys: list[str] | None, principal: Principal = SYSTEM) -> Subscription:
        """Register a subscription for ``keys`` (None: every key the caller may read) before reading its snapshot."""
        sub = Subscription(frozenset(keys) if keys else None, principal)
        if principal.token_id is not None:
            self._by_token.setdefault(principal.token_id, set()).add(sub)
        if sub.keys is None:
            self._all.add(sub)
        else:
            for key in sub.keys:
                self._by_key.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``; safe to call twice."""
        token = sub.principal.token_id
        if token is not None and token in self._by_token:
            self._by_token[token].discard(sub)
            if not self._by_token[token]:
                del self._by_token[token]
        if sub.keys is None:
            self._all.discard(sub)
            return
        for key in sub.keys:
            subs = self._by_key.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_key[key]
                    self._cache.pop(key, None)

    # Snapshot cache: the current entry of every subscribed settings key, kept
    # by dispatch. A snapshot taken from it after subscribing loses nothing:
    # whatever is newer than the cache is still on its way to the subscription.

    def snapshot(self, keys: list[str]) -> dict[str, Entry] | None:
        """The cached entries of ``keys``, or None unless every one is cached (and not deleted)."""
        cache = self._cache
        if not keys:
            return None
        entries = {}
        for key in keys:
            cached = cache.get(key)
            if cached is None or cached[0].deleted:
                return None
            entries[key] = cached[0]
        return entries

    def frame_of(self, entries: dict[str, Entry]) -> bytes:
        """The serialised DataResponse of ``entries``, reusing frames serialised before."""
        parts = []
        for key, entry in entries.items():
            cached = self._cache.get(key)
            if cached is not None and cached[0] is entry and cached[1] is not None:
                parts.append(cached[1])
            else:
                frame = entry.frame()
                if cached is not None and cached[0] is entry:
                    self._cache[key] = (entry, frame)
                parts.append(frame)
        return b"".join(parts)

    def remember(self, entries: dict[str, Entry]) -> None:
        """Cache entries read from the database for subscribed keys (older than the cache: ignored)."""
        for key, entry in entries.items():
            if key in self._by_key:
                self._cache_newer(entry)

    def _cache_newer(self, entry: Entry, frame: bytes | None = None) -> None:
        # Keys stay cached from their first subscriber to their last; every
        # change dispatched meanwhile lands here, so a database read that
        # raced with a newer change cannot put an older value back.
        if not self._cacheable(entry.key):
            return
        cached = self._cache.get(entry.key)
        if cached is not None and cached[0].revision >= entry.revision:
            return
        # A deletion stays as a tombstone: it keeps an older read from coming back.
        self._cache[entry.key] = (entry, frame)

    def _cacheable(self, key: str) -> bool:
        # Only settings: an external store's keys must fail while it is down,
        # which only a read through the store can tell.
        # (A prefix match over the few configured stores: cheaper than caching it.)
        return isinstance(store_for_key(key), ModelStore)

    @property
    def subscription_count(self) -> int:
        """Number of live subscriptions (for health and tests)."""
        return len(self._all) + len({id(s) for subs in self._by_key.values() for s in subs})

    # Fan-out

    def dispatch(self, entry: Entry) -> None:
        """Offer one change to every interested subscription, serialising it once."""
        self._track(entry.revision)
        subs = self._by_key.get(entry.key)
        if entry.deleted:
            if subs:
                self._cache_newer(entry)
            return
        if not subs and not self._all:
            return
        frame = entry.frame()
        if subs:
            self._cache_newer(entry, frame)
        for sub in self._all:
            sub.offer(entry.key, entry.revision, frame, entry.secret)
        if subs:
            for sub in subs:
                sub.offer(entry.key, entry.revision, frame, entry.secret)

    def _track(self, revision: int) -> None:
        if revision <= self._applied:
            return
        if revision == self._applied + 1:
            self._applied = revision
            while self._applied + 1 in self._ahead:
                self._applied += 1
                self._ahead.discard(self._applied)
            return
        self._ahead.add(revision)
        if self._gap_task is None or self._gap_task.done():
            self._gap_task = asyncio.create_task(self._close_gap(), name="datastream-hub-gap")

    async def _close_gap(self) -> None:
        await asyncio.sleep(datastream_settings.GAP_GRACE)
        if self._ahead:
            logger.info("hub: revisions missing after %d; resyncing from the database", self._applied)
            await self._resync_quietly()

    async def resync(self) -> int:
        """Dispatch whatever changed after the last applied revision; return how many entries."""
        async with self._resync_lock:
            top = await services.acurrent_revision()
            if top <= self._applied:
                return 0
            changed = await services.achanged_since(revision=self._applied)
            for entry in changed.values():
                self.dispatch(entry)
            self._applied = max(self._applied, top)
            self._ahead = {r for r in self._ahead if r > self._applied}
            self.stats["resyncs"] += 1
            self.stats["resynced_entries"] += len(changed)
            return len(changed)

    async def _resync_quietly(self) -> None:
        try:
            await self.resync()
            self._set_health(database_ok=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("hub: resync failed; retrying", exc_info=True)
            self._set_health(database_ok=False)

    # Loops

    async def _receive_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                assert self._layer is not None and self._channel is not None
                message = await self._layer.receive(self._channel)
                self._set_health(layer_ok=True)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("hub: channel layer receive failed; retrying in %.1fs", backoff, exc_info=True)
                self._set_health(layer_ok=False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._join()
                except Exception:  # noqa: BLE001, S112 - the layer is still down; the loop retries
                    continue
                # Anything published while the layer was gone is only in the database now.
                await self._resync_quietly()
                continue
            if message.get("type") == REFRESH_TYPE:
                if self.on_refresh is not None:
                    self.on_refresh(str(message.get("store", "")))
                continue
            if message.get("type") != MESSAGE_TYPE:
                continue
            try:
                entry = Entry.from_message(message)
            except (KeyError, TypeError, ValueError):
                logger.warning("hub: malformed change message dropped: %r", message)
                continue
            self.stats["received"] += 1
            self.dispatch(entry)

    async def _resync_loop(self) -> None:
        since_renew = 0.0
        self._set_health(layer_ok=True)
        while True:
            interval = datastream_settings.RESYNC_INTERVAL
            await asyncio.sleep(interval)
            await self._resync_quietly()
            await self._end_revoked_streams()
            was_ok = self.layer_ok
            now_ok = await self._probe_layer()
            since_renew += interval
            if (now_ok and not was_ok) or since_renew >= GROUP_RENEW_SECONDS:
                # Back from an outage (or due for renewal): subscribe again in
                # case the layer lost our subscription with its connection.
                since_renew = 0.0
                try:
                    await self._join()
                except Exception:
                    logger.warning("hub: joining the change group failed", exc_info=True)
                    self._set_health(layer_ok=False)

    async def _probe_layer(self) -> bool:
        # A subscriber's receive() just waits while the broker is gone (the
        # client reconnects by itself), so reachability is tested by sending.
        assert self._layer is not None
        try:
            await asyncio.wait_for(self._layer.group_send(PROBE_GROUP, {"type": "datastream.probe"}), timeout=2.0)
        except Exception:  # noqa: BLE001 - any failure means the layer is unreachable now
            if self.layer_ok:
                logger.warning("hub: channel layer unreachable; serving from the database until it is back")
            self._set_health(layer_ok=False)
            return False
        if not self.layer_ok:
            logger.info("hub: channel layer reachable again")
        self._set_health(layer_ok=True)
        return True

    def subscriptions(self) -> set[Subscription]:
        """Every live subscription."""
        return {*self._all, *(s for subs in self._by_key.values() for s in subs)}

    async def _end_revoked_streams(self) -> None:
        # One query per interval for the whole process, not one per stream,
        # and no scan of the streams: they are indexed by token.
        if not self._by_token:
            return
        try:
            invalid = await DatabaseSyncToAsync(invalid_tokens, thread_sensitive=False)(set(self._by_token))
        except Exception:  # noqa: BLE001 - the database is down: the resync loop reports it
            return
        for token_id in invalid:
            for sub in list(self._by_token.get(token_id, ())):
                self.unsubscribe(sub)
                sub.close(("UNAUTHENTICATED", "token was revoked or expired"))

    def _set_health(self, *, layer_ok: bool | None = None, database_ok: bool | None = None) -> None:
        before = (self.layer_ok, self.database_ok)
        if layer_ok is not None:
            self.layer_ok = layer_ok
        if database_ok is not None:
            self.database_ok = database_ok
        if (self.layer_ok, self.database_ok) != before and self.on_health_change is not None:
            self.on_health_change(self)


_current: Hub | None = None


def get_hub() -> Hub:
    """The hub of the running gRPC server in this process."""
    if _current is None:
        raise RuntimeError("no hub is running in this process (start the gRPC server first)")
    return _current


def set_hub(hub: Hub | None) -> None:
    """Make ``hub`` the process hub (the gRPC server does this on start and stop)."""
    global _current
    _current = hub
