"""The default store: Django's own database through the Setting model."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from datastream_app.changes import Entry
from datastream_app.codec import ValueType, encode_wire
from datastream_app.exceptions import NotFound, TypeMismatch
from datastream_app.models import Revision, Setting
from datastream_app.signals import entry_for
from datastream_app.stores.base import Capability, Decoder, Store


class ModelStore(Store):
    """Settings edited in the admin; every change takes a global revision and a history row."""

    def capabilities(self) -> list[Capability]:
        """Every setting with its type."""
        rows = Setting.objects.filter(key__startswith=self.prefix).order_by("key").values_list("key", "value_type")
        return [Capability(key=key, value_type=value_type) for key, value_type in rows]

    def get_many(self, keys: Sequence[str] | None) -> dict[str, Entry]:
        """Current values, in one query."""
        queryset = Setting.objects.filter(key__startswith=self.prefix)
        if keys is not None:
            queryset = queryset.filter(key__in=list(keys))
        return {setting.key: entry_for(setting) for setting in queryset.order_by("key")}

    def put(self, key: str, *, value_type: str, decode: Decoder) -> Entry:
        """Parse and save under a row lock so concurrent pushes to one key serialise."""
        with transaction.atomic():
            setting = Setting.objects.select_for_update().filter(key=key).first()
            if setting is None:
                raise NotFound(f"unknown key {key!r}", keys=[key])
            if value_type and value_type != setting.value_type:
                raise TypeMismatch(f"key {key!r} has value_type {setting.value_type!r}, not {value_type!r}")
            kind = ValueType(setting.value_type)
            setting._datastream_locked_old = (bytes(setting.value), setting.value_type)  # type: ignore[attr-defined]
            setting.value = encode_wire(kind, decode(kind, setting.json_schema))
            setting.save()
            return entry_for(setting)

    def current_revision(self) -> int:
        """The global revision counter."""
        return Revision.current()

    def changed_since(self, revision: int) -> dict[str, Entry]:
        """Settings above ``revision``, using the revision index."""
        queryset = Setting.objects.filter(key__startswith=self.prefix, revision__gt=revision).order_by("revision")
        return {setting.key: entry_for(setting) for setting in queryset}
