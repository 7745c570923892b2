"""The change message every save publishes (its wire form is built in rpc/frames.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MESSAGE_TYPE = "datastream.change"


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's current value as the wire carries it."""

    key: str
    value_type: str
    value: bytes
    revision: int
    updated_at: datetime
    deleted: bool = False
    # Secret settings reach only callers granted secret read.
    secret: bool = False

    def to_message(self) -> dict[str, Any]:
        """The channel-layer message (msgpack-safe: str, bytes, int, bool)."""
        ts = self.updated_at
        return {
            "type": MESSAGE_TYPE,
            "key": self.key,
            "value_type": self.value_type,
            "value": self.value,
            "revision": self.revision,
            "updated_at_us": int(ts.timestamp() * 1_000_000),
            "deleted": self.deleted,
            "secret": self.secret,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Entry:
        """Rebuild an Entry from a channel-layer message; KeyError/TypeError if malformed."""
        return cls(
            key=str(message["key"]),
            value_type=str(message["value_type"]),
            value=bytes(message["value"]),
            revision=int(message["revision"]),
            updated_at=datetime.fromtimestamp(int(message["updated_at_us"]) / 1_000_000, tz=UTC),
            deleted=bool(message.get("deleted", False)),
            secret=bool(message.get("secret", False)),
        )
