"""One stream's view of the hub, and why the hub may end it."""

from __future__ import annotations

import asyncio
import enum

from datastream_app.access import SYSTEM, Principal
from datastream_app.changes import Entry


class CloseReason(enum.Enum):
    """Why the hub ended a subscription (the gRPC edge maps each to a status)."""

    # The process is stopping: the client should reconnect (elsewhere).
    SHUTDOWN = "shutdown"
    # The subscriber's token was revoked or expired.
    REVOKED = "revoked"


class Subscription:
    """Pending frames per key, coalesced to the latest (settings are state, not events)."""

    __slots__ = ("_waiter", "close_reason", "closed", "deletions", "floor", "keys", "pending", "principal", "sent")

    def __init__(self, keys: frozenset[str] | None, principal: Principal = SYSTEM, *, deletions: bool = False) -> None:
        self.keys = keys
        self.principal = principal
        # Opted in to tombstones (DataRequest.include_deletions).
        self.deletions = deletions
        # Revisions up to this one the client already holds (DataRequest.since_revision of a resumed stream).
        self.floor = 0
        self.close_reason = CloseReason.SHUTDOWN
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
        if revision <= self.sent.get(key, self.floor):
            return
        if secret and not self.principal.can_read_secret(key):
            return
        if self.keys is None and not self.principal.can_read(key):
            return
        queued = self.pending.get(key)
        if queued is None or queued[0] < revision:
            self.pending[key] = (revision, frame)
            self._wake()

    def prime(self, snapshot: dict[str, Entry], floor: int = 0) -> None:
        """Mark the snapshot as delivered and drop queued frames it already covers.

        ``floor``: a resumed stream's snapshot holds only what changed after
        it; the client holds every revision up to it, so none is sent again.
        """
        if floor:
            self.floor = max(self.floor, floor)
            for key in [k for k, (revision, _) in self.pending.items() if revision <= self.floor]:
                del self.pending[key]
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

    def close(self, reason: CloseReason = CloseReason.SHUTDOWN) -> None:
        """Wake the waiting stream so it ends for ``reason``."""
        self.close_reason = reason
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
