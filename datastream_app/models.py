"""Settings, the global revision counter and the change history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.validators import RegexValidator
from django.db import NotSupportedError, connection, models
from django.utils import timezone

from datastream_app import codec
from datastream_app.audit import Interface, current_actor
from datastream_app.codec import ValueType
from datastream_app.exceptions import InvalidValue


class Revision(models.Model):
    """The single-row global revision counter, increased by one per change of any key."""

    value = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"revision {self.value}"

    @classmethod
    def next(cls) -> int:
        """Take the next revision; call inside the transaction that makes the change.

        The row lock is held until commit, so changes commit in revision order
        (on SQLite the IMMEDIATE write lock gives the same order).
        """
        # One statement: the UPDATE takes the row lock and returns the new value
        # (SQLite 3.35+ and PostgreSQL both have RETURNING).
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET value = value + 1 WHERE id = 1 RETURNING value")  # noqa: S608
            row = cursor.fetchone()
        if row is not None:
            return int(row[0])
        counter, _ = cls.objects.select_for_update().get_or_create(pk=1)
        counter.value += 1
        counter.save(update_fields=["value"])
        return counter.value

    @classmethod
    def current(cls) -> int:
        """Return the last revision taken (0 before any change)."""
        return cls.objects.filter(pk=1).values_list("value", flat=True).first() or 0


class SettingQuerySet(models.QuerySet["Setting"]):
    """Bulk writes would skip the revision, the history and the publish: deletes go row by row, the rest refuse."""

    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete each setting through ``Setting.delete()`` (a revision and a history row each)."""
        count = 0
        for setting in self:
            count += setting.delete()[0]
        return count, ({self.model._meta.label: count} if count else {})

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]

    def update(self, **kwargs: Any) -> int:
        """Refused: change settings with ``save()`` or ``datastream_app.services``."""
        raise NotSupportedError(_BULK_REFUSED.format(method="update"))

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        """Refused: change settings with ``save()`` or ``datastream_app.services``."""
        raise NotSupportedError(_BULK_REFUSED.format(method="bulk_update"))

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[Setting]:
        """Refused: create settings one by one with ``Setting.objects.create()``."""
        raise NotSupportedError(_BULK_REFUSED.format(method="bulk_create"))


_BULK_REFUSED = (
    "Setting.objects.{method}() is not supported: it would change settings without a revision, a history row or a "
    "publish. Save each setting (setting.save(), Setting.objects.create()) or use datastream_app.services."
)


class Setting(models.Model):
    """One typed setting. ``value`` holds the wire encoding of the value."""

    key = models.CharField(
        max_length=codec.KEY_MAX_LENGTH,
        unique=True,
        validators=[RegexValidator(codec.KEY_PATTERN, "Use only letters, digits and _ . - /")],
        help_text="Letters, digits and _ . - / only.",
    )
    value_type = models.CharField(max_length=16, choices=[(t.value, t.value) for t in ValueType])
    value = models.BinaryField(default=b"", help_text="Wire encoding of the value.")
    json_schema = models.JSONField(null=True, blank=True, help_text="Optional JSON Schema a json value must satisfy.")
    description = models.TextField(blank=True)
    secret = models.BooleanField(
        default=False,
        help_text="Masked in lists, history and logs; streamed only to tokens granted secret read.",
    )
    revision = models.PositiveBigIntegerField(default=0, editable=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SettingQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        permissions = [("view_secret_setting", "Can view values of secret settings")]

    def __str__(self) -> str:
        return self.key

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Validate, then write through the one write path (``recording.record_change``).

        The edit is applied to the row as it is locked now, so an instance read
        before someone else's change neither writes back its stale revision nor
        loses that change from the history. A different value or type takes a
        new revision and a history row and is published after commit. Django's
        ``save()`` arguments (``force_insert``, ``using``, ``update_fields``) are
        accepted for compatibility; every editable field is written.
        """
        from datastream_app.recording import record_change

        self.validate_value()
        lookup: dict[str, Any] = {"pk": self.pk} if self.pk is not None else {"key": self.key}
        record_change(Setting, lookup=lookup, change=lambda row: self)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Delete through the one write path: a revision, a history row, published after commit."""
        from datastream_app.recording import record_change

        result = record_change(Setting, lookup={"pk": self.pk}, change=lambda row: None)
        return (1, {self._meta.label: 1}) if result.changed else (0, {})

    @property
    def type(self) -> ValueType:
        """The value type as an enum."""
        return ValueType(self.value_type)

    @property
    def python_value(self) -> Any:
        """The canonical Python value."""
        return codec.decode_wire(self.type, bytes(self.value), self.json_schema)

    def set_python_value(self, value: Any) -> None:
        """Validate ``value`` for this setting's type and schema and store its wire form."""
        canonical = codec.check_python(self.type, value, self.json_schema)
        self.value = codec.encode_wire(self.type, canonical)

    def validate_value(self) -> None:
        """Raise a domain error unless key, type, schema and value all fit together."""
        codec.validate_key(self.key)
        value_type = codec.parse_value_type(self.value_type)
        if self.json_schema is not None:
            if value_type is not ValueType.JSON:
                raise InvalidValue("a JSON Schema applies to json settings only")
            codec.validate_schema(self.json_schema)
        # Re-encoding canonicalises the stored bytes (e.g. " 10 " -> "10").
        self.value = codec.encode_wire(value_type, codec.decode_wire(value_type, bytes(self.value), self.json_schema))


class SettingChange(models.Model):
    """One change of one key: the history and audit trail."""

    CREATE, UPDATE, DELETE = "create", "update", "delete"

    setting = models.ForeignKey(Setting, null=True, blank=True, on_delete=models.SET_NULL, related_name="history")
    store = models.CharField(max_length=64, blank=True, default="", help_text="Store alias; empty for settings.")
    key = models.CharField(max_length=codec.KEY_MAX_LENGTH, db_index=True)
    value_type = models.CharField(max_length=16)
    action = models.CharField(max_length=8, choices=[(CREATE, "create"), (UPDATE, "update"), (DELETE, "delete")])
    old_value = models.BinaryField(null=True)
    new_value = models.BinaryField(null=True)
    revision = models.PositiveBigIntegerField(unique=True)
    actor = models.CharField(max_length=150, blank=True)
    interface = models.CharField(max_length=8, choices=Interface.CHOICES, default=Interface.CODE)
    changed_at = models.DateTimeField(db_index=True)
    # Copied from the setting, so the admin masks its values for those who may not see them.
    secret = models.BooleanField(default=False)

    class Meta:
        ordering = ["-revision"]
        verbose_name = "setting change"

    def __str__(self) -> str:
        return f"{self.key}@{self.revision}"

    @classmethod
    def record(
        cls,
        *,
        setting: Setting | None,
        key: str,
        value_type: str,
        old_value: bytes | None,
        new_value: bytes | None,
        revision: int,
        changed_at: datetime,
        action: str,
        store: str = "",
        secret: bool = False,
    ) -> SettingChange:
        """Write one history row attributed to the current actor."""
        actor = current_actor()
        return cls.objects.create(
            setting=setting,
            store=store,
            key=key,
            value_type=value_type,
            action=action,
            old_value=old_value,
            new_value=new_value,
            revision=revision,
            actor=actor.name,
            interface=actor.interface,
            changed_at=changed_at,
            secret=secret,
        )


class MirroredEntry(models.Model):
    """The current value of a key served by an external store (git, S3, SQL table).

    The store's watcher keeps this copy in step with the source, taking a global
    revision and a history row per change, so reads, revisions and resyncs work
    the same for every store.
    """

    store = models.CharField(max_length=64, db_index=True)
    key = models.CharField(max_length=codec.KEY_MAX_LENGTH, unique=True)
    value_type = models.CharField(max_length=16, choices=[(t.value, t.value) for t in ValueType])
    value = models.BinaryField(default=b"")
    # The source's version marker (blob id, ETag, row hash): equal means unchanged.
    etag = models.CharField(max_length=255)
    revision = models.PositiveBigIntegerField(db_index=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["key"]
        verbose_name = "mirrored entry"
        verbose_name_plural = "mirrored entries"

    def __str__(self) -> str:
        return f"{self.store}:{self.key}"


class StoreStatus(models.Model):
    """Health and watcher lease of one external store, shared by every process."""

    alias = models.CharField(max_length=64, primary_key=True)
    ok = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True)
    # One process at a time refreshes a store, so an older listing can never
    # overwrite a newer one; the lease passes on when its holder stops renewing.
    leader = models.CharField(max_length=128, blank=True)
    lease_until = models.DateTimeField(null=True)

    class Meta:
        verbose_name = "store status"
        verbose_name_plural = "store statuses"

    def __str__(self) -> str:
        return f"{self.alias}: {'ok' if self.ok else 'unavailable'}"


class ApiToken(models.Model):
    """A client credential for gRPC and REST, scoped by key prefix; only its hash is stored."""

    name = models.CharField(max_length=100, unique=True, help_text="Who or what uses it, e.g. billing-service.")
    # The public part of the token ("ds_<lookup>_<secret>"): finds the row without the secret.
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    max_streams = models.PositiveIntegerField(
        null=True, blank=True, help_text="Concurrent Subscribe streams per gRPC process; empty: the default."
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class TokenGrant(models.Model):
    """What one token may do under one key prefix ("" is every key)."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="grants")
    key_prefix = models.CharField(max_length=codec.KEY_MAX_LENGTH, blank=True)
    can_read = models.BooleanField(default=True)
    can_write = models.BooleanField(default=False)
    can_read_secrets = models.BooleanField(default=False)

    class Meta:
        ordering = ["key_prefix"]
        unique_together = [("token", "key_prefix")]

    def __str__(self) -> str:
        flags = (("read", self.can_read), ("write", self.can_write), ("secrets", self.can_read_secrets))
        rights = [name for name, on in flags if on]
        return f"{self.key_prefix or '*'}: {', '.join(rights) or 'nothing'}"
