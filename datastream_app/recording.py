"""The one owner of "a change happened": lock, revision, history, publish after commit.

Every write of a key goes through ``record_change``: a setting saved in the
admin or by code, a REST or gRPC push, an external store's watcher applying a
listing, a deletion. It runs in one transaction with one lock order, the same
for every caller, so concurrent writers can neither deadlock on each other nor
lose an update:

1. the key's row, ``SELECT … FOR UPDATE`` (a key that does not exist yet: its
   row is inserted first, which holds the key's unique index entry), so the old
   value is the committed one, read under the lock;
2. the revision counter (``Revision.next``), held until commit, so changes
   commit in revision order and revisions never go backwards;
3. the row written with that revision, and one history row whose old value is
   the value read in 1 (each key's history is an unbroken chain);
4. the change published to the channel layer on commit (a rolled-back
   transaction publishes nothing).

``post_save``/``post_delete`` still fire for code that listens to them; they
carry no state this module relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

from django.db import models, transaction
from django.utils import timezone

from datastream_app.changes import Entry
from datastream_app.exceptions import Aborted
from datastream_app.models import MirroredEntry, Revision, Setting, SettingChange
from datastream_app.publisher import publisher

Row = TypeVar("Row", Setting, MirroredEntry)


class Keep:
    """Returned by a change function: leave the row as it is, record nothing."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = Keep()


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record_change`` did: the key's entry afterwards (None: it does not exist) and whether it changed."""

    entry: Entry | None
    changed: bool


def entry_of(row: Setting | MirroredEntry) -> Entry:
    """The current-value Entry of a stored row."""
    return Entry(
        key=row.key,
        value_type=row.value_type,
        value=bytes(row.value),
        revision=row.revision,
        updated_at=row.updated_at,
        secret=getattr(row, "secret", False),
    )


def record_change(
    model: type[Row],
    *,
    lookup: dict[str, Any],
    change: Callable[[Row | None], Row | Keep | None],
    store: str = "",
    expected_revision: int | None = None,
    record_unchanged: Callable[[Row], bool] | None = None,
) -> Recorded:
    """Apply ``change`` to the locked row of one key and record the change.

    ``lookup`` finds the key's row (``{"key": …}`` or ``{"pk": …}``). ``change``
    gets that row, locked (None: no such key), and returns the row to write (the
    one it was given, edited, or a new instance), ``KEEP`` to leave it alone, or
    None to delete the key. It may raise a domain error: nothing is written then.
    Only a different value, value type or secret flag takes a revision; other
    fields (a description, say) are saved without one. ``expected_revision`` makes the
    change conditional (Aborted if the key's revision differs; 0 for a missing
    key). ``record_unchanged(row)`` true takes a revision even for an equal
    value, so the answer does not tell the caller whether its value was the
    current one.
    """
    # No savepoint when nested: a failure here fails the caller's transaction
    # anyway, and a savepoint costs two statements per change.
    with transaction.atomic(savepoint=False):
        row = model._default_manager.select_for_update().filter(**lookup).first()
        current = 0 if row is None else row.revision
        if expected_revision is not None and current != expected_revision:
            raise Aborted(
                f"key {lookup.get('key', row.key if row is not None else '')!r} is at revision {current}, "
                f"not {expected_revision}; read it again and retry"
            )
        # Copied before ``change`` edits the row in place.
        old = None if row is None else _state(row)
        target = change(row)
        if isinstance(target, Keep):
            return Recorded(None if row is None else entry_of(row), changed=False)
        if target is None:
            if row is None:
                return Recorded(None, changed=False)
            return Recorded(_delete(row, store=store), changed=True)
        if row is not None:
            if _state(target) == old and not (record_unchanged is not None and record_unchanged(target)):
                # Only other fields changed: keep the revision the locked row has
                # (``target`` may be an instance read before someone else's change).
                target.revision, target.updated_at = row.revision, row.updated_at
                _write(target)
                return Recorded(entry_of(target), changed=False)
        else:
            # Hold the key (its unique index entry) before the counter: the same
            # order as for an existing key's row lock.
            target.revision = 0
            target.updated_at = timezone.now()
            _write(target, force_insert=True)
        target.revision = Revision.next()
        target.updated_at = timezone.now()
        _write(target, update=row is None)
        SettingChange.record(
            setting=target if isinstance(target, Setting) else None,
            store=store,
            key=target.key,
            value_type=target.value_type,
            old_value=None if old is None else old[0],
            new_value=bytes(target.value),
            revision=target.revision,
            changed_at=target.updated_at,
            action=SettingChange.CREATE if old is None else SettingChange.UPDATE,
            secret=getattr(target, "secret", False),
        )
        entry = entry_of(target)
        transaction.on_commit(partial(publisher.publish, entry), robust=True)
        return Recorded(entry, changed=True)


def _state(row: Setting | MirroredEntry) -> tuple[bytes, str, bool]:
    # What subscribers see of a key: its value, its type, and who may see it
    # (making a setting secret, or no longer secret, changes who receives it).
    return bytes(row.value), row.value_type, getattr(row, "secret", False)


def _write(row: Setting | MirroredEntry, *, force_insert: bool = False, update: bool = False) -> None:
    # The plain model save: Setting.save() itself routes here through record_change.
    if update:
        models.Model.save(row, update_fields=["revision", "updated_at"])
    else:
        models.Model.save(row, force_insert=force_insert, force_update=row.pk is not None and not force_insert)


def _delete(row: Setting | MirroredEntry, *, store: str) -> Entry:
    revision = Revision.next()
    now = timezone.now()
    secret = getattr(row, "secret", False)
    SettingChange.record(
        setting=None,
        store=store,
        key=row.key,
        value_type=row.value_type,
        old_value=bytes(row.value),
        new_value=None,
        revision=revision,
        changed_at=now,
        action=SettingChange.DELETE,
        secret=secret,
    )
    models.Model.delete(row)
    entry = Entry(
        key=row.key,
        value_type=row.value_type,
        value=b"",
        revision=revision,
        updated_at=now,
        deleted=True,
        secret=secret,
    )
    transaction.on_commit(partial(publisher.publish, entry), robust=True)
    return entry
