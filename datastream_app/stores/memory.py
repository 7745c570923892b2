"""An external store whose source is a dict in this process: the reference backend.

It shows the smallest complete backend (``fetch`` and ``write``) and lets tests
change the source "from outside" through ``MemoryStore.source(alias)``. It keeps
nothing across restarts and is not shared between processes.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, ClassVar

from datastream_app.codec import check_python, encode_wire, parse_value_type, validate_key
from datastream_app.exceptions import Aborted
from datastream_app.stores.mirrored import MirroredStore, Snapshot


def etag_of(value_type: str, value: bytes) -> str:
    """A content hash as the version marker."""
    return hashlib.sha256(value_type.encode() + b"\0" + value).hexdigest()


class MemorySource:
    """The outside system: keys with a type and wire bytes, safe across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, tuple[str, bytes]] = {}
        self.reachable = True

    def set(self, key: str, value_type: str, value: bytes) -> None:
        """Write a key the way another program would."""
        with self.lock:
            self.items[key] = (value_type, value)

    def delete(self, key: str) -> None:
        """Remove a key the way another program would."""
        with self.lock:
            self.items.pop(key, None)


class MemoryStore(MirroredStore):
    """OPTIONS: ``keys`` = {key: (value_type, initial Python value)} seeds the source once."""

    _sources: ClassVar[dict[str, MemorySource]] = {}
    _sources_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, alias: str, keys: dict[str, tuple[str, Any]] | None = None, **options: Any) -> None:
        super().__init__(alias=alias, **options)
        with self._sources_lock:
            if alias not in self._sources:
                source = MemorySource()
                for key, (value_type, value) in (keys or {}).items():
                    kind = parse_value_type(value_type)
                    source.set(validate_key(key), kind.value, encode_wire(kind, check_python(kind, value)))
                self._sources[alias] = source
            self.src = self._sources[alias]

    @classmethod
    def source(cls, alias: str) -> MemorySource:
        """The source behind ``alias`` (for tests and demos)."""
        return cls._sources[alias]

    @classmethod
    def forget(cls, alias: str) -> None:
        """Drop the source behind ``alias``."""
        with cls._sources_lock:
            cls._sources.pop(alias, None)

    def fetch(self) -> dict[str, Snapshot]:
        """Every key in the dict."""
        with self.src.lock:
            if not self.src.reachable:
                raise ConnectionError("memory source switched off")
            return {k: Snapshot(t, v, etag_of(t, v)) for k, (t, v) in self.src.items.items()}

    def write(self, key: str, value: bytes, value_type: str, expected_etag: str) -> Snapshot:
        """Compare-and-set on the content hash."""
        with self.src.lock:
            if not self.src.reachable:
                raise ConnectionError("memory source switched off")
            current = self.src.items.get(key)
            if current is None or etag_of(*current) != expected_etag:
                raise Aborted(f"key {key!r} changed in store {self.alias!r} meanwhile; read it again and retry")
            self.src.items[key] = (value_type, value)
            return Snapshot(value_type, value, etag_of(value_type, value))
