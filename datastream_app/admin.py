"""Admin: typed settings, their history and audit trail, API tokens, and the external stores' state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from datastream_app import access, codec, services
from datastream_app.audit import Interface, acting
from datastream_app.forms import SettingForm
from datastream_app.models import ApiToken, MirroredEntry, Setting, SettingChange, StoreStatus, TokenGrant

if TYPE_CHECKING:
    SettingAdminBase = admin.ModelAdmin[Setting]
    SettingChangeAdminBase = admin.ModelAdmin[SettingChange]
    HistoryInlineBase = admin.TabularInline[SettingChange, Setting]
    TokenAdminBase = admin.ModelAdmin[ApiToken]
    GrantInlineBase = admin.TabularInline[TokenGrant, ApiToken]
    MirroredAdminBase = admin.ModelAdmin[MirroredEntry]
    StatusAdminBase = admin.ModelAdmin[StoreStatus]
else:
    SettingAdminBase = SettingChangeAdminBase = TokenAdminBase = MirroredAdminBase = StatusAdminBase = admin.ModelAdmin
    HistoryInlineBase = GrantInlineBase = admin.TabularInline

PREVIEW_CHARS = 80
MASK = "••••••"


def preview(value_type: str, raw: bytes | memoryview | None) -> str:
    """A short human-readable form of a stored wire value."""
    if raw is None:
        return "—"
    data = bytes(raw)
    text = f"<{len(data)} bytes>" if value_type == codec.ValueType.BYTES else data.decode("utf-8", errors="replace")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def may_see_secrets(request: HttpRequest) -> bool:
    """Whether the admin user may see values of secret settings."""
    return bool(request.user.has_perm("datastream_app.view_secret_setting"))


class _RequestAware:
    """Keeps the current request so display methods can mask secrets per user."""

    _request: HttpRequest | None = None

    def _masked(self, secret: bool, value_type: str, raw: bytes | memoryview | None) -> str:
        if secret and raw is not None and (self._request is None or not may_see_secrets(self._request)):
            return MASK
        return preview(value_type, raw)


class _ChangeValues(_RequestAware):
    """The ``old`` and ``new`` columns of history rows, secret values masked."""

    @admin.display(description="old value")
    def old(self, obj: SettingChange) -> str:
        return self._masked(obj.secret, obj.value_type, obj.old_value)

    @admin.display(description="new value")
    def new(self, obj: SettingChange) -> str:
        return self._masked(obj.secret, obj.value_type, obj.new_value)


class SettingChangeInline(_ChangeValues, HistoryInlineBase):
    """The key's recent changes, newest first, read-only."""

    model = SettingChange
    fk_name = "setting"
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-revision"]
    fields = ["revision", "action", "old", "new", "actor", "interface", "changed_at"]
    readonly_fields = ["revision", "action", "old", "new", "actor", "interface", "changed_at"]
    verbose_name_plural = "History"

    def get_queryset(self, request: HttpRequest) -> QuerySet[SettingChange]:
        self._request = request
        return super().get_queryset(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Setting)
class SettingAdmin(_RequestAware, SettingAdminBase):
    """Typed settings; every save is published to subscribers after commit."""

    form = SettingForm
    list_display = ["key", "value_type", "value_preview", "secret", "revision", "updated_at"]
    list_filter = ["value_type", "secret"]
    search_fields = ["key", "description"]
    readonly_fields = ["revision", "updated_at", "history_link"]
    inlines = [SettingChangeInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Setting]:
        self._request = request
        return super().get_queryset(request)

    def get_fields(self, request: HttpRequest, obj: Setting | None = None) -> list[str]:  # type: ignore[override]
        # Who may not edit (or may not see a secret) gets the read-only display;
        # the admin would otherwise show the model field itself, wire bytes as b'10'.
        editable = obj is None or (
            self.has_change_permission(request, obj) and (not obj.secret or may_see_secrets(request))
        )
        fields = ["key", "value_type", "value" if editable else "current_value", "json_schema", "description", "secret"]
        if obj is not None and obj.value_type != codec.ValueType.JSON:
            fields.remove("json_schema")  # only json values have a schema
        return fields + (["revision", "updated_at", "history_link"] if obj is not None else [])

    def get_form(self, request: HttpRequest, obj: Setting | None = None, change: bool = False, **kwargs: Any) -> Any:
        """The setting form; its typed ``value`` field is declared, not built from the model."""
        # The model's ``value`` is a non-editable BinaryField: naming it to
        # modelform_factory raises FieldError. SettingForm declares its own.
        fields = kwargs.pop("fields", None) or flatten_fieldsets(self.get_fieldsets(request, obj))
        kwargs["fields"] = [name for name in fields if name != "value"]
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Setting | None = None) -> list[str]:
        # The type is fixed once subscribers may depend on it; the key is its identity.
        return ["key", "value_type", "current_value", *self.readonly_fields] if obj is not None else []

    @admin.display(description="value")
    def value_preview(self, obj: Setting) -> str:
        return self._masked(obj.secret, obj.value_type, obj.value)

    @admin.display(description="value")
    def current_value(self, obj: Setting) -> str:
        if obj.secret and (self._request is None or not may_see_secrets(self._request)):
            return MASK
        return format_html('<pre class="datastream-value">{}</pre>', codec.to_text(obj.type, obj.python_value))

    @admin.display(description="full history")
    def history_link(self, obj: Setting) -> str:
        return format_html('<a href="../../../settingchange/?key={}">All changes of {}</a>', obj.key, obj.key)

    def change_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        self._request = request
        return super().change_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Setting, form: Any, change: bool) -> None:
        with acting(request.user.get_username(), Interface.ADMIN):
            services.save_setting(setting=obj)

    def delete_model(self, request: HttpRequest, obj: Setting) -> None:
        with acting(request.user.get_username(), Interface.ADMIN):
            services.delete_setting(setting=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Setting]) -> None:
        # One by one: each deletion takes a revision and a history row.
        with acting(request.user.get_username(), Interface.ADMIN):
            for obj in queryset:
                services.delete_setting(setting=obj)


@admin.register(SettingChange)
class SettingChangeAdmin(_ChangeValues, SettingChangeAdminBase):
    """Who changed what, when, and through which interface (users and tokens alike)."""

    list_display = ["revision", "key", "action", "old", "new", "actor", "interface", "store", "changed_at"]
    list_filter = ["interface", "action", "value_type", "store", "actor"]
    search_fields = ["key", "actor"]
    date_hierarchy = "changed_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[SettingChange]:
        self._request = request
        return super().get_queryset(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TokenGrantInline(GrantInlineBase):
    """What the token may do, per key prefix ("" is every key)."""

    model = TokenGrant
    extra = 1


@admin.register(ApiToken)
class ApiTokenAdmin(TokenAdminBase):
    """API tokens: the secret is shown once when the token is created or rotated."""

    list_display = ["name", "lookup", "state", "expires_at", "last_used_at", "created_by", "created_at"]
    search_fields = ["name", "lookup"]
    readonly_fields = ["lookup", "created_at", "created_by", "last_used_at", "revoked_at"]
    fields = ["name", "expires_at", "max_streams", *readonly_fields]
    inlines = [TokenGrantInline]
    actions = ["revoke", "rotate"]

    @admin.display(description="state")
    def state(self, obj: ApiToken) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        return "active" if obj.active else "expired"

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        text = None
        if not change:
            obj.created_by = request.user.get_username()
            text = access.assign_secret(obj)
        super().save_model(request, obj, form, change)
        if text is not None:
            messages.warning(request, f"Token for {obj.name}: {text} — copy it now, it is not shown again.")

    @admin.action(description="Revoke selected tokens (their open streams end within seconds)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, f"Revoked {count} token(s).")

    @admin.action(description="Rotate the secret of selected tokens")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            messages.warning(request, f"New secret for {token.name}: {access.rotate_secret(token)} — copy it now.")


@admin.register(MirroredEntry)
class MirroredEntryAdmin(MirroredAdminBase):
    """Keys served by external stores (git, S3, SQL): read-only, changed at their source."""

    list_display = ["key", "store", "value_type", "value_preview", "revision", "updated_at"]
    list_filter = ["store", "value_type"]
    search_fields = ["key"]

    @admin.display(description="value")
    def value_preview(self, obj: MirroredEntry) -> str:
        return preview(obj.value_type, obj.value)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(StoreStatus)
class StoreStatusAdmin(StatusAdminBase):
    """Whether each external store was read recently, and which process watches it."""

    list_display = ["alias", "ok", "checked_at", "error", "leader", "lease_until"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
