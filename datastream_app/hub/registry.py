"""Who listens to what: the live subscriptions by key and by token, and the fan-out of one frame."""

from __future__ import annotations

from datastream_app.access import SYSTEM, Principal
from datastream_app.changes import Entry
from datastream_app.hub.subscription import Subscription


class Registry:
    """Subscriptions indexed by key (every-key ones apart) and by token."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._by_token: dict[int, set[Subscription]] = {}

    def add(
        self, keys: frozenset[str] | None, principal: Principal = SYSTEM, *, deletions: bool = False
    ) -> Subscription:
        """A new subscription for ``keys`` (None: every key the caller may read); ``deletions``: send tombstones."""
        sub = Subscription(keys, principal, deletions=deletions)
        if principal.token_id is not None:
            self._by_token.setdefault(principal.token_id, set()).add(sub)
        if sub.keys is None:
            self._all.add(sub)
        else:
            for key in sub.keys:
                self._by_key.setdefault(key, set()).add(sub)
        return sub

    def remove(self, sub: Subscription) -> list[str]:
        """Forget ``sub`` (safe twice); return the keys nobody watches any more."""
        token = sub.principal.token_id
        if token is not None and token in self._by_token:
            self._by_token[token].discard(sub)
            if not self._by_token[token]:
                del self._by_token[token]
        if sub.keys is None:
            self._all.discard(sub)
            return []
        unwatched = []
        for key in sub.keys:
            subs = self._by_key.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_key[key]
                    unwatched.append(key)
        return unwatched

    def watched(self, key: str) -> bool:
        """Whether a subscription names ``key`` (every-key subscriptions do not count)."""
        return key in self._by_key

    def interested(self, key: str) -> bool:
        """Whether any subscription may want a change of ``key``."""
        return bool(self._all) or key in self._by_key

    def offer(self, entry: Entry, frame: bytes) -> None:
        """Offer one serialised change to every subscription covering its key."""
        for sub in self._all:
            sub.offer(entry.key, entry.revision, frame, entry.secret)
        for sub in self._by_key.get(entry.key, ()):
            sub.offer(entry.key, entry.revision, frame, entry.secret)

    def offer_deletion(self, entry: Entry, frame: bytes) -> None:
        """Offer one serialised tombstone to every subscription covering its key that asked for tombstones."""
        for sub in self._all:
            if sub.deletions:
                sub.offer(entry.key, entry.revision, frame, entry.secret)
        for sub in self._by_key.get(entry.key, ()):
            if sub.deletions:
                sub.offer(entry.key, entry.revision, frame, entry.secret)

    def tokens(self) -> set[int]:
        """Tokens with at least one live subscription."""
        return set(self._by_token)

    def of_token(self, token_id: int) -> list[Subscription]:
        """The live subscriptions of one token."""
        return list(self._by_token.get(token_id, ()))

    def all(self) -> set[Subscription]:
        """Every live subscription."""
        return {*self._all, *(s for subs in self._by_key.values() for s in subs)}

    def clear(self) -> None:
        """Forget every subscription."""
        self._all.clear()
        self._by_key.clear()
        self._by_token.clear()
