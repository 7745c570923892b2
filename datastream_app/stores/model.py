"""The default store: Django's own database through the Setting model."""

from __future__ import annotations

from collections.abc import Sequence

from datastream_app.changes import Entry
from datastream_app.codec import ValueType
from datastream_app.exceptions import NotFound, TypeMismatch
from datastream_app.models import Revision, Setting
from datastream_app.recording import entry_of, record_change
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
        return {setting.key: entry_of(setting) for setting in queryset.order_by("key")}

    def put(
        self,
        key: str,
        *,
        value_type: str,
        decode: Decoder,
        expected_revision: int | None = None,
        caller_reads_secrets: bool = True,
    ) -> Entry:
        """Parse the value for the key's type and schema as locked now, and record the change."""

        def change(setting: Setting | None) -> Setting:
            if setting is None:
                raise NotFound(f"unknown key {key!r}", keys=[key])
            if value_type and value_type != setting.value_type:
                raise TypeMismatch(f"key {key!r} has value_type {setting.value_type!r}, not {value_type!r}")
            kind = ValueType(setting.value_type)
            setting.value = decode(kind, setting.json_schema, setting.secret)
            return setting

        recorded = record_change(
            Setting,
            lookup={"key": key},
            change=change,
            expected_revision=expected_revision,
            record_unchanged=lambda setting: setting.secret and not caller_reads_secrets,
        )
        assert recorded.entry is not None  # change() raised for a missing key
        return recorded.entry

    def current_revision(self) -> int:
        """The global revision counter."""
        return Revision.current()

    def changed_since(self, revision: int) -> dict[str, Entry]:
        """Settings above ``revision``, using the revision index."""
        queryset = Setting.objects.filter(key__startswith=self.prefix, revision__gt=revision).order_by("revision")
        return {setting.key: entry_of(setting) for setting in queryset}
