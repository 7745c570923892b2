"""Signals: committed Setting changes are published, rolled-back ones are not; requests give their connections back."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.signals import request_finished
from django.db import connections, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from datastream_app.changes import Entry
from datastream_app.models import Setting
from datastream_app.publisher import publisher


def entry_for(setting: Setting) -> Entry:
    """The current-value Entry of a saved setting."""
    return Entry(
        key=setting.key,
        value_type=setting.value_type,
        value=bytes(setting.value),
        revision=setting.revision,
        updated_at=setting.updated_at,
        secret=setting.secret,
    )


@receiver(post_save, sender=Setting, dispatch_uid="datastream_publish_save")
def publish_save(sender: type[Setting], instance: Setting, **kwargs: Any) -> None:
    """Publish after commit, only when the save took a new revision."""
    if getattr(instance, "_datastream_changed", False):
        transaction.on_commit(partial(publisher.publish, entry_for(instance)), robust=True)


@receiver(post_delete, sender=Setting, dispatch_uid="datastream_publish_delete")
def publish_delete(sender: type[Setting], instance: Setting, **kwargs: Any) -> None:
    """Publish a deletion so every hub's revision sequence stays gap-free."""
    revision = getattr(instance, "_datastream_deleted_revision", None)
    if revision is not None:
        entry = Entry(
            key=instance.key,
            value_type=instance.value_type,
            value=b"",
            revision=revision,
            updated_at=timezone.now(),
            deleted=True,
        )
        transaction.on_commit(partial(publisher.publish, entry), robust=True)


@receiver(request_finished, dispatch_uid="datastream_close_request_connections")
def close_request_connections(**kwargs: Any) -> None:
    """Close (or, pooled, give back) the database connections of the request that just finished.

    Under ASGI each request runs its sync code in a thread of its own that ends
    with the request, so a connection kept open for reuse (CONN_MAX_AGE) is
    never reused: it lingers until garbage collection. Hundreds of SQLite files
    and dozens of PostgreSQL backends stayed open under a steady REST load.
    """
    for connection in connections.all(initialized_only=True):
        connection.close()
