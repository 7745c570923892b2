"""The store interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from datastream_app.changes import Entry
from datastream_app.codec import ValueType

# Turns a key's type and JSON Schema into the canonical Python value to store.
Decoder = Callable[[ValueType, "dict[str, Any] | None"], Any]


@dataclass(frozen=True, slots=True)
class Capability:
    """A key a store serves, with its value type."""

    key: str
    value_type: str


class Store(ABC):
    """A source of typed keys: list them, read current values, write one.

    Keys passed in and returned are full keys (with the mount's prefix).
    Methods are synchronous; the ``a``-prefixed async variants run them in a
    worker thread, so a backend with native async I/O may override those.
    """

    def __init__(self, *, alias: str, prefix: str = "", **options: Any) -> None:
        self.alias = alias
        self.prefix = prefix
        self.options = options

    def owns(self, key: str) -> bool:
        """Whether ``key`` falls under this store's prefix."""
        return key.startswith(self.prefix)

    @abstractmethod
    def capabilities(self) -> list[Capability]:
        """Every key this store serves, with its value type, sorted by key."""

    @abstractmethod
    def get_many(self, keys: Sequence[str] | None) -> dict[str, Entry]:
        """Current entries of ``keys`` (None: all keys); missing keys are left out."""

    @abstractmethod
    def put(self, key: str, *, value_type: str, decode: Decoder) -> Entry:
        """Write one value atomically and return the new entry.

        ``value_type`` is the type the writer claims ("" for any); a different
        type than the key's raises TypeMismatch. ``decode`` parses the value for
        the key's actual type and schema and raises InvalidValue if it does not
        fit. An unknown key raises NotFound. A failed put changes nothing.
        """

    def current_revision(self) -> int:
        """The store's latest revision (0 if it has none)."""
        return 0

    def changed_since(self, revision: int) -> dict[str, Entry]:
        """Current entries whose revision is above ``revision``."""
        return {key: entry for key, entry in self.get_many(None).items() if entry.revision > revision}

    async def acapabilities(self) -> list[Capability]:
        """Async variant of capabilities()."""
        return await sync_to_async(self.capabilities, thread_sensitive=False)()

    async def aget_many(self, keys: Sequence[str] | None) -> dict[str, Entry]:
        """Async variant of get_many()."""
        return await sync_to_async(self.get_many, thread_sensitive=False)(keys)

    async def aput(self, key: str, *, value_type: str, decode: Decoder) -> Entry:
        """Async variant of put()."""
        return await sync_to_async(self.put, thread_sensitive=False)(key, value_type=value_type, decode=decode)
