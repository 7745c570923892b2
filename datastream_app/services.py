"""The operations every interface (admin, REST, gRPC, code) goes through.

Functions take keyword-only arguments and raise only DatastreamError
subclasses for anything a client did wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.db import DatabaseSyncToAsync

from datastream_app import codec
from datastream_app.access import SYSTEM, Principal
from datastream_app.changes import Entry
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import LimitExceeded, NotFound, PermissionDenied, Unavailable
from datastream_app.stores import Capability, Store, get_stores, store_for_key


def normalize_keys(keys: Iterable[str]) -> list[str]:
    """Validate requested keys, drop duplicates (keeping order) and enforce the per-request limit."""
    result = list(dict.fromkeys(keys))
    limit = datastream_settings.MAX_KEYS_PER_REQUEST
    if len(result) > limit:
        raise LimitExceeded(f"{len(result)} keys requested; the limit is {limit} keys per request")
    for key in result:
        codec.validate_key(key)
    return result


def list_capabilities(*, principal: Principal = SYSTEM) -> list[Capability]:
    """Every key the caller may read, of every store, with its value type, sorted by key."""
    seen: dict[str, Capability] = {}
    for store in get_stores():
        try:
            capabilities = store.capabilities()
        except Unavailable:
            # One mount down must not hide the others: its keys are left out.
            continue
        for capability in capabilities:
            # Stores are ordered most specific first: the first owner wins.
            if store_for_key(capability.key) is store and principal.can_read(capability.key):
                seen.setdefault(capability.key, capability)
    return [seen[key] for key in sorted(seen)]


def visible(principal: Principal, entry: Entry) -> bool:
    """Whether ``principal`` may see ``entry`` (read scope, and secret read for secret settings)."""
    if not principal.can_read(entry.key):
        return False
    return not entry.secret or principal.can_read_secret(entry.key)


def get_entries(*, keys: Iterable[str], principal: Principal = SYSTEM) -> dict[str, Entry]:
    """Current values of ``keys`` (empty: every key the caller may read).

    A key outside the caller's scope raises PermissionDenied naming it; a
    missing key raises NotFound naming every missing key.
    """
    wanted = normalize_keys(keys)
    if not wanted:
        result: dict[str, Entry] = {}
        for store in get_stores():
            try:
                entries = store.get_many(None)
            except Unavailable:
                # "Every key" still answers when one mount is down: its keys are left out.
                continue
            for key, entry in entries.items():
                if store_for_key(key) is store and visible(principal, entry):
                    result.setdefault(key, entry)
        return dict(sorted(result.items()))
    check_readable(wanted, principal)
    by_store: dict[int, list[str]] = {}
    stores: dict[int, Store] = {}
    missing: list[str] = []
    for key in wanted:
        owner = store_for_key(key)
        if owner is None:
            missing.append(key)
            continue
        stores[id(owner)] = owner
        by_store.setdefault(id(owner), []).append(key)
    found: dict[str, Entry] = {}
    for store_id, store_keys in by_store.items():
        found.update(stores[store_id].get_many(store_keys))
    missing.extend(key for key in wanted if key not in found and key not in missing)
    if missing:
        raise NotFound(f"unknown key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}", keys=missing)
    result = {key: found[key] for key in wanted}
    check_secrets(result, principal)
    return result


def check_readable(keys: Iterable[str], principal: Principal) -> None:
    """PermissionDenied naming every key outside the caller's read scope."""
    denied = [key for key in keys if not principal.can_read(key)]
    if denied:
        raise PermissionDenied(f"not allowed to read: {', '.join(denied)}")


def check_secrets(entries: dict[str, Entry], principal: Principal) -> None:
    """PermissionDenied naming every secret setting the caller may not read."""
    secret = [key for key, entry in entries.items() if not visible(principal, entry)]
    if secret:
        raise PermissionDenied(f"not allowed to read secret settings: {', '.join(secret)}")


def _check_size(size: int) -> None:
    limit = datastream_settings.MAX_VALUE_BYTES
    if size > limit:
        raise LimitExceeded(f"value is {size} bytes; the limit is {limit} bytes")


def _store_for(key: str, principal: Principal) -> Store:
    codec.validate_key(key)
    if not principal.can_write(key):
        raise PermissionDenied(f"not allowed to write {key!r}")
    store = store_for_key(key)
    if store is None:
        raise NotFound(f"unknown key {key!r}", keys=[key])
    return store


def push_wire(*, key: str, value: bytes, value_type: str = "", principal: Principal = SYSTEM) -> Entry:
    """Set ``key`` from its wire bytes (gRPC PushUpdate): size, type and schema checked first."""
    _check_size(len(value))
    if value_type:
        codec.parse_value_type(value_type)
    store = _store_for(key, principal)
    return store.put(key, value_type=value_type, decode=lambda kind, schema: codec.decode_wire(kind, value, schema))


def push_json(*, key: str, value: Any, value_type: str = "", principal: Principal = SYSTEM) -> Entry:
    """Set ``key`` from a JSON value (REST push); bytes values come as base64 text."""
    if value_type:
        codec.parse_value_type(value_type)
    store = _store_for(key, principal)

    def decode(kind: codec.ValueType, schema: dict[str, Any] | None) -> Any:
        parsed = codec.from_json(kind, value, schema)
        _check_size(len(codec.encode_wire(kind, parsed)))
        return parsed

    return store.put(key, value_type=value_type, decode=decode)


def entry_json(entry: Entry) -> dict[str, Any]:
    """The REST representation of an entry: the value typed by its value type."""
    kind = codec.ValueType(entry.value_type)
    return {
        "key": entry.key,
        "value": codec.to_json(kind, codec.decode_wire(kind, entry.value)),
        "value_type": entry.value_type,
        "updated_at": entry.updated_at.isoformat().replace("+00:00", "Z"),
        "revision": entry.revision,
    }


def current_revision() -> int:
    """The highest revision any store has taken."""
    return max((store.current_revision() for store in get_stores()), default=0)


def changed_since(*, revision: int) -> dict[str, Entry]:
    """Current entries changed after ``revision`` (hubs resync with this after lost messages)."""
    result: dict[str, Entry] = {}
    for store in get_stores():
        result.update(store.changed_since(revision))
    return result


def _in_thread(func: Any) -> Any:
    # A worker-thread pool rather than Django's single thread-sensitive one, so
    # reads run in parallel; DatabaseSyncToAsync closes stale connections.
    return DatabaseSyncToAsync(func, thread_sensitive=False)


alist_capabilities = _in_thread(list_capabilities)
aget_entries = _in_thread(get_entries)
apush_wire = _in_thread(push_wire)
acurrent_revision = _in_thread(current_revision)
achanged_since = _in_thread(changed_since)
