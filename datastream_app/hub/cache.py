"""The current entry (and its serialised frame) of every watched settings key.

Kept by dispatch from a key's first subscriber to its last, so a snapshot taken
from it after subscribing loses nothing: whatever is newer than the cache is
still on its way to the subscription, and a database read that raced with a
newer change cannot put an older value back.
"""

from __future__ import annotations

from collections.abc import Callable

from datastream_app.changes import Entry

# Serialises one entry as a wire frame (the gRPC edge supplies it).
FrameBuilder = Callable[[Entry], bytes]


class FrameCache:
    """Entries by key, each with its frame once serialised; deletions stay as tombstones."""

    def __init__(self, frame: FrameBuilder, cacheable: Callable[[str], bool]) -> None:
        self._frame = frame
        self._cacheable = cacheable
        self._entries: dict[str, tuple[Entry, bytes | None]] = {}

    def snapshot(self, keys: list[str]) -> dict[str, Entry] | None:
        """The cached entries of ``keys``, or None unless every one is cached (and not deleted)."""
        if not keys:
            return None
        entries = {}
        for key in keys:
            cached = self._entries.get(key)
            if cached is None or cached[0].deleted:
                return None
            entries[key] = cached[0]
        return entries

    def entries(self, keys: list[str]) -> dict[str, Entry] | None:
        """The cached entries of ``keys``, tombstones included, or None unless every one is cached."""
        if not keys:
            return None
        entries = {}
        for key in keys:
            cached = self._entries.get(key)
            if cached is None:
                return None
            entries[key] = cached[0]
        return entries

    def frame_of(self, entries: dict[str, Entry]) -> bytes:
        """The serialised DataResponse of ``entries``, reusing frames serialised before."""
        parts = []
        for key, entry in entries.items():
            cached = self._entries.get(key)
            if cached is not None and cached[0] is entry and cached[1] is not None:
                parts.append(cached[1])
            else:
                frame = self._frame(entry)
                if cached is not None and cached[0] is entry:
                    self._entries[key] = (entry, frame)
                parts.append(frame)
        return b"".join(parts)

    def put(self, entry: Entry, frame: bytes | None = None) -> None:
        """Keep ``entry`` unless the cache already holds as new a one (or the key is not a setting)."""
        if not self._cacheable(entry.key):
            return
        cached = self._entries.get(entry.key)
        if cached is not None and cached[0].revision >= entry.revision:
            return
        # A deletion stays as a tombstone: it keeps an older read from coming back.
        self._entries[entry.key] = (entry, frame)

    def drop(self, key: str) -> None:
        """Forget ``key`` (its last subscriber left)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
