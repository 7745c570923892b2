"""The operations every interface (admin, REST, gRPC, code) goes through.

Functions take keyword-only arguments and raise only DatastreamError
subclasses for anything a client did wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from channels.db import DatabaseSyncToAsync

from datastream_app import codec
from datastream_app.access import SYSTEM, Principal
from datastream_app.changes import Entry
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import (
    InvalidKey,
    InvalidValue,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from datastream_app.models import Setting, SettingChange
from datastream_app.stores import Capability, Store, get_stores, store_for_key
from datastream_app.stores.model import ModelStore


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


# How a value arrives: gRPC's wire bytes, REST's JSON value (bytes as base64),
# the admin's form text (bytes as base64), or an already typed Python value.
Encoding = Literal["wire", "json", "text", "python"]
_PARSERS: dict[str, Callable[[codec.ValueType, Any, dict[str, Any] | None], Any]] = {
    "wire": codec.decode_wire,
    "json": codec.from_json,
    "text": codec.from_text,
    "python": codec.check_python,
}


def parse_value(
    *,
    kind: codec.ValueType,
    value: Any,
    encoding: Encoding,
    schema: dict[str, Any] | None = None,
    hide_schema: bool = False,
) -> bytes:
    """The one place that knows the rules for a value: type, JSON Schema and size; returns canonical wire bytes.

    Every interface calls it (REST, gRPC, the admin's form). ``hide_schema``
    (a secret setting, a caller who may not read it) replaces a schema
    violation's message, which can quote the schema's values, with one that
    says only that the schema was not met.
    """
    if encoding == "wire":
        # Refuse an oversized value before parsing it.
        _check_size(len(value))
    parse = _PARSERS[encoding]
    if hide_schema and schema is not None:
        parsed = parse(kind, value, None)
        try:
            codec.validate_against_schema(parsed, schema)
        except InvalidValue:
            raise InvalidValue("value does not match the JSON Schema of this secret setting") from None
    else:
        parsed = parse(kind, value, schema)
    wire = codec.encode_wire(kind, parsed)
    _check_size(len(wire))
    return wire


def _store_for(key: str, principal: Principal) -> Store:
    codec.validate_key(key)
    if not principal.can_write(key):
        raise PermissionDenied(f"not allowed to write {key!r}")
    store = store_for_key(key)
    if store is None:
        raise NotFound(f"unknown key {key!r}", keys=[key])
    return store


def push(
    *,
    key: str,
    value: Any,
    encoding: Encoding,
    value_type: str = "",
    principal: Principal = SYSTEM,
    expected_revision: int | None = None,
) -> Entry:
    """Set ``key`` to ``value``: the write every interface makes (checks, then the key's store records it).

    The value is parsed for the key's type and JSON Schema as they are under the
    key's lock. A writer who may not read a secret setting always takes a new
    revision, even for the current value, so the answer cannot confirm a guess.
    """
    if value_type:
        codec.parse_value_type(value_type)
    store = _store_for(key, principal)
    reads_secret = principal.can_read_secret(key)

    def decode(kind: codec.ValueType, schema: dict[str, Any] | None, secret: bool) -> bytes:
        return parse_value(
            kind=kind, value=value, encoding=encoding, schema=schema, hide_schema=secret and not reads_secret
        )

    return store.put(
        key,
        value_type=value_type,
        decode=decode,
        expected_revision=expected_revision,
        caller_reads_secrets=reads_secret,
    )


def push_wire(*, key: str, value: bytes, value_type: str = "", principal: Principal = SYSTEM) -> Entry:
    """Set ``key`` from its wire bytes (gRPC PushUpdate)."""
    return push(key=key, value=value, encoding="wire", value_type=value_type, principal=principal)


def push_json(*, key: str, value: Any, value_type: str = "", principal: Principal = SYSTEM) -> Entry:
    """Set ``key`` from a JSON value (REST push); bytes values come as base64 text."""
    return push(key=key, value=value, encoding="json", value_type=value_type, principal=principal)


def check_new_key(key: str) -> str:
    """A key a new setting may take: valid, and not under an external store's mount."""
    codec.validate_key(key)
    owner = store_for_key(key)
    if owner is not None and not isinstance(owner, ModelStore):
        raise InvalidKey(f"keys under {owner.prefix!r} are served by the store {owner.alias!r}")
    return key


def check_schema(*, kind: codec.ValueType, schema: Any) -> None:
    """A JSON Schema applies to json settings only, and must itself be valid."""
    if schema is None:
        return
    if kind is not codec.ValueType.JSON:
        raise InvalidValue("a JSON Schema applies to json settings only")
    codec.validate_schema(schema)


def save_setting(*, setting: Setting) -> Setting:
    """Create a setting, or save an edit of one (the admin): checked, then recorded like every change.

    The edit is applied to the setting's row as it is locked now: a form loaded
    before someone else's change neither writes back a stale revision nor
    drops that change from the history.
    """
    if setting.pk is None:
        check_new_key(setting.key)
    check_schema(kind=codec.parse_value_type(setting.value_type), schema=setting.json_schema)
    setting.save()
    return setting


def delete_setting(*, setting: Setting) -> None:
    """Delete a setting: a revision and a history row, published after commit."""
    setting.delete()


def current_revision() -> int:
    """The highest revision any store has taken."""
    return max((store.current_revision() for store in get_stores()), default=0)


def changed_since(*, revision: int, deletions: bool = False) -> dict[str, Entry]:
    """Current entries changed after ``revision`` (hubs resync with this after lost messages), in revision order.

    With ``deletions``, keys deleted after ``revision`` and absent now are
    included as tombstones (``Entry.deleted``) from the history.
    """
    result: dict[str, Entry] = {}
    for store in get_stores():
        for key, entry in store.changed_since(revision).items():
            # Stores are ordered most specific first: the first owner wins.
            if store_for_key(key) is store:
                result.setdefault(key, entry)
    if deletions:
        for key, tombstone in deleted_since(revision=revision).items():
            # A key deleted and created again since is in ``result`` with a newer revision.
            result.setdefault(key, tombstone)
    return dict(sorted(result.items(), key=lambda item: item[1].revision))


def deleted_since(*, revision: int, keys: Iterable[str] | None = None) -> dict[str, Entry]:
    """Tombstones of the keys (of ``keys``; None: any) whose latest deletion is after ``revision``, from the history.

    A key may exist again since (created after its deletion): callers prefer its current entry.
    """
    rows = SettingChange.objects.filter(action=SettingChange.DELETE, revision__gt=revision)
    if keys is not None:
        rows = rows.filter(key__in=list(keys))
    result: dict[str, Entry] = {}
    for key, value_type, at, changed_at, secret in rows.order_by("revision").values_list(
        "key", "value_type", "revision", "changed_at", "secret"
    ):
        result[key] = Entry(
            key=key, value_type=value_type, value=b"", revision=at, updated_at=changed_at, deleted=True, secret=secret
        )
    return result


def resumable(revision: int) -> bool:
    """Whether the history can tell every change after ``revision``.

    Every revision has one history row, so it can when ``revision`` is not
    above the current revision and the row of the revision right after it is
    still kept (nothing prunes the history today; a pruned one would not).
    """
    current = current_revision()
    if revision > current:
        return False
    return revision == current or SettingChange.objects.filter(revision=revision + 1).exists()


def changes_since(
    *, revision: int, keys: Iterable[str], principal: Principal = SYSTEM, deletions: bool = False
) -> dict[str, Entry] | None:
    """See ``resume``: its answer alone."""
    return resume(revision=revision, keys=keys, principal=principal, deletions=deletions)[0]


def resume(
    *, revision: int, keys: Iterable[str], principal: Principal = SYSTEM, deletions: bool = False
) -> tuple[dict[str, Entry] | None, dict[str, Entry]]:
    """What a client holding every change up to ``revision`` lacks: entries of ``keys`` changed after it.

    ``keys`` empty: every key the caller may read. With ``deletions``, a key
    deleted after ``revision`` (and absent now) comes as a tombstone, under the
    same read rules as its value. A named key that is missing (and not such a
    tombstone) raises NotFound and one the caller may not read raises
    PermissionDenied, as for a full snapshot. None when the history cannot
    answer from ``revision`` (see ``resumable``): send the full snapshot then.

    Returns that answer, and the current entries read for named keys (a hub caches them).
    """
    wanted = normalize_keys(keys)
    check_readable(wanted, principal)
    if revision <= 0 or not resumable(revision):
        return None, {}
    if not wanted:
        changed = changed_since(revision=revision, deletions=deletions)
        return {key: entry for key, entry in changed.items() if visible(principal, entry)}, {}
    # Named keys: read them all, so a missing or unreadable one is refused as a full snapshot would.
    by_store: dict[int, tuple[Store, list[str]]] = {}
    for key in wanted:
        owner = store_for_key(key)
        if owner is not None:
            by_store.setdefault(id(owner), (owner, []))[1].append(key)
    present: dict[str, Entry] = {}
    for store, store_keys in by_store.values():
        present.update(store.get_many(store_keys))
    missing = [key for key in wanted if key not in present]
    tombstones: dict[str, Entry] = {}
    if missing and deletions:
        tombstones = {
            key: entry
            for key, entry in deleted_since(revision=revision, keys=missing).items()
            if visible(principal, entry)
        }
    unknown = [key for key in missing if key not in tombstones]
    if unknown:
        raise NotFound(f"unknown key{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}", keys=unknown)
    check_secrets(present, principal)
    result = {key: entry for key, entry in present.items() if entry.revision > revision}
    result.update(tombstones)
    return dict(sorted(result.items(), key=lambda item: item[1].revision)), present


def changes_among(
    entries: dict[str, Entry], *, revision: int, principal: Principal = SYSTEM, deletions: bool = False
) -> dict[str, Entry] | None:
    """``changes_since`` for named keys, answered from their current ``entries`` (tombstones included).

    None when the entries cannot answer as ``changes_since`` would (a key
    deleted at or before ``revision``, a tombstone not asked for or not
    visible): ask ``changes_since`` then, which refuses as a full snapshot.
    """
    live = {}
    for key, entry in entries.items():
        if entry.deleted:
            if not deletions or entry.revision <= revision or not visible(principal, entry):
                return None
        else:
            live[key] = entry
    check_secrets(live, principal)
    changed = {key: entry for key, entry in entries.items() if entry.revision > revision}
    return dict(sorted(changed.items(), key=lambda item: item[1].revision))


def _in_thread(func: Any) -> Any:
    # A worker-thread pool rather than Django's single thread-sensitive one, so
    # reads run in parallel; DatabaseSyncToAsync closes stale connections.
    return DatabaseSyncToAsync(func, thread_sensitive=False)


alist_capabilities = _in_thread(list_capabilities)
aget_entries = _in_thread(get_entries)
apush_wire = _in_thread(push_wire)
acurrent_revision = _in_thread(current_revision)
achanged_since = _in_thread(changed_since)
achanges_since = _in_thread(changes_since)
aresume = _in_thread(resume)
