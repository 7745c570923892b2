"""The store interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from datastream_app.changes import Entry
from datastream_app.codec import ValueType

# Turns a value into the canonical wire bytes to store, given the key's type,
# JSON Schema and secret flag as they are under the key's lock.
Decoder = Callable[[ValueType, "dict[str, Any] | None", bool], bytes]


@dataclass(frozen=True, slots=True)
class Capability:
    """A key a store serves, with its value type."""

    key: str
    value_type: str


def reject_unknown_options(alias: str, unknown: dict[str, Any]) -> None:
    """The one rule for store OPTIONS: a name no backend takes fails at start, naming the store and the option."""
    if unknown:
        raise ImproperlyConfigured(
            f'DATASTREAM["STORES"][{alias!r}]["OPTIONS"] has unknown options: {", ".join(sorted(unknown))}'
        )


class Store(ABC):
    """A source of typed keys: list them, read current values, write one.

    Keys passed in and returned are full keys (with the mount's prefix).
    Methods are synchronous; callers on an event loop run them in a worker thread.
    """

    def __init__(self, *, alias: str, prefix: str = "", **unknown: Any) -> None:
        reject_unknown_options(alias, unknown)
        self.alias = alias
        self.prefix = prefix

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
    def put(
        self,
        key: str,
        *,
        value_type: str,
        decode: Decoder,
        expected_revision: int | None = None,
        caller_reads_secrets: bool = True,
    ) -> Entry:
        """Write one value atomically and return the new entry.

        ``value_type`` is the type the writer claims ("" for any); a different
        type than the key's raises TypeMismatch. ``decode`` parses the value for
        the key's actual type and schema and raises InvalidValue if it does not
        fit. An unknown key raises NotFound. ``expected_revision`` makes the
        write conditional (Aborted unless the key is at that revision). A caller
        who may not read secret values (``caller_reads_secrets`` false) takes a
        revision even when it writes a secret setting's current value, so the
        answer cannot confirm a guess. A failed put changes nothing.
        """

    def current_revision(self) -> int:
        """The store's latest revision (0 if it has none)."""
        return 0

    def changed_since(self, revision: int) -> dict[str, Entry]:
        """Current entries whose revision is above ``revision``."""
        return {key: entry for key, entry in self.get_many(None).items() if entry.revision > revision}
