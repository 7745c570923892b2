"""Model signals: a committed change of a Setting is published; a rolled-back one is not."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction
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
