"""Settings, the global revision counter and the change history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.validators import RegexValidator
from django.db import connection, models, transaction
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

    class Meta:
        ordering = ["key"]
        permissions = [("view_secret_setting", "Can view values of secret settings")]

    def __str__(self) -> str:
        return self.key

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Validate, then save with a new revision and a history row if the value changed."""
        self.validate_value()
        # No savepoint when nested (a push's or the admin's transaction): a
        # failure here fails the caller's whole transaction anyway, and a
        # savepoint costs two more statements per change.
        with transaction.atomic(savepoint=False):
            old: dict[str, Any] | None = None
            # A caller that read the row under lock in this transaction hands its
            # values over (ModelStore.put); anyone else may hold a stale instance.
            locked = self.__dict__.pop("_datastream_locked_old", None)
            if locked is not None:
                old = {"value": locked[0], "value_type": locked[1]}
            elif self.pk is not None:
                row = Setting.objects.filter(pk=self.pk).values("value", "value_type").first()
                old = dict(row) if row is not None else None
            changed = old is None or bytes(old["value"]) != bytes(self.value) or old["value_type"] != self.value_type
            if changed:
                self.revision = Revision.next()
                self.updated_at = timezone.now()
                if kwargs.get("update_fields") is not None:
                    kwargs["update_fields"] = {*kwargs["update_fields"], "revision", "updated_at", "value"}
            self._datastream_changed = changed
            super().save(*args, **kwargs)
            if changed:
                SettingChange.record(
                    setting=self,
                    secret=self.secret,
                    key=self.key,
                    value_type=self.value_type,
                    old_value=None if old is None else bytes(old["value"]),
                    new_value=bytes(self.value),
                    revision=self.revision,
                    changed_at=self.updated_at,
                    action=SettingChange.CREATE if old is None else SettingChange.UPDATE,
                )

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Delete, taking a revision so subscribers' revision sequence stays gap-free."""
        with transaction.atomic():
            revision = Revision.next()
            SettingChange.record(
                setting=None,
                secret=self.secret,
                key=self.key,
                value_type=self.value_type,
                old_value=bytes(self.value),
                new_value=None,
                revision=revision,
                changed_at=timezone.now(),
                action=SettingChange.DELETE,
            )
            self._datastream_deleted_revision = revision
            return super().delete(*args, **kwargs)

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
