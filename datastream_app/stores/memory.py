"""An in-memory store: the reference implementation of the store contract.

It serves one process only and keeps nothing across restarts; use it for tests
and as the model a new backend is checked against.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from datastream_app.changes import Entry
from datastream_app.codec import ValueType, check_python, encode_wire, parse_value_type, validate_key
from datastream_app.exceptions import NotFound, TypeMismatch
from datastream_app.stores.base import Capability, Decoder, Store


class MemoryStore(Store):
    """Keys declared in OPTIONS["keys"] as {key: (value_type, initial value)}."""

    def __init__(self, *, alias: str, prefix: str = "", keys: dict[str, tuple[str, Any]] | None = None) -> None:
        super().__init__(alias=alias, prefix=prefix)
        self._lock = threading.Lock()
        self._revision = 0
        self._entries: dict[str, Entry] = {}
        for key, (value_type, value) in (keys or {}).items():
            kind = parse_value_type(value_type)
            self._store(validate_key(key), kind, encode_wire(kind, check_python(kind, value)))

    def _store(self, key: str, kind: ValueType, raw: bytes) -> Entry:
        self._revision += 1
        entry = Entry(key=key, value_type=kind.value, value=raw, revision=self._revision, updated_at=timezone.now())
        self._entries[key] = entry
        return entry

    def capabilities(self) -> list[Capability]:
        """Every declared key with its type."""
        with self._lock:
            return [Capability(key=k, value_type=e.value_type) for k, e in sorted(self._entries.items())]

    def get_many(self, keys: Sequence[str] | None) -> dict[str, Entry]:
        """Current values of the requested keys."""
        with self._lock:
            if keys is None:
                return dict(sorted(self._entries.items()))
            return {k: self._entries[k] for k in keys if k in self._entries}

    def put(self, key: str, *, value_type: str, decode: Decoder) -> Entry:
        """Validate fully, then swap the entry in one step."""
        with self._lock:
            current = self._entries.get(key)
            if current is None:
                raise NotFound(f"unknown key {key!r}", keys=[key])
            if value_type and value_type != current.value_type:
                raise TypeMismatch(f"key {key!r} has value_type {current.value_type!r}, not {value_type!r}")
            kind = ValueType(current.value_type)
            raw = encode_wire(kind, decode(kind, None))
            if raw == current.value:
                return current
            return self._store(key, kind, raw)

    def current_revision(self) -> int:
        """This store's own revision counter."""
        with self._lock:
            return self._revision
