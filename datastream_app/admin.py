"""Admin: settings with type-fitted value widgets, and each key's history."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from datastream_app import codec
from datastream_app.audit import Interface, acting
from datastream_app.forms import SettingForm
from datastream_app.models import Setting, SettingChange

PREVIEW_CHARS = 80


def preview(value_type: str, raw: bytes | memoryview | None) -> str:
    """A short human-readable form of a stored wire value."""
    if raw is None:
        return "—"
    data = bytes(raw)
    text = f"<{len(data)} bytes>" if value_type == codec.ValueType.BYTES else data.decode("utf-8", errors="replace")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class SettingChangeInline(admin.TabularInline):
    """The key's recent changes, newest first, read-only."""

    model = SettingChange
    fk_name = "setting"
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-revision"]
    fields = ["revision", "action", "old", "new", "actor", "interface", "changed_at"]
    readonly_fields = fields
    verbose_name_plural = "History"

    @admin.display(description="old value")
    def old(self, obj: SettingChange) -> str:
        return preview(obj.value_type, obj.old_value)

    @admin.display(description="new value")
    def new(self, obj: SettingChange) -> str:
        return preview(obj.value_type, obj.new_value)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Setting)
class SettingAdmin(admin.ModelAdmin):
    """Typed settings; every save is published to subscribers after commit."""

    form = SettingForm
    list_display = ["key", "value_type", "value_preview", "revision", "updated_at"]
    list_filter = ["value_type"]
    search_fields = ["key", "description"]
    readonly_fields = ["revision", "updated_at", "history_link"]
    inlines = [SettingChangeInline]

    def get_fields(self, request: HttpRequest, obj: Setting | None = None) -> list[str]:
        # Who may not edit sees the typed value; the admin would otherwise show
        # the model field itself, the wire bytes as a Python repr (b'10').
        value = "value" if obj is None or self.has_change_permission(request, obj) else "current_value"
        fields = ["key", "value_type", value, "json_schema", "description"]
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
        return preview(obj.value_type, obj.value)

    @admin.display(description="value")
    def current_value(self, obj: Setting) -> str:
        return format_html('<pre class="datastream-value">{}</pre>', codec.to_text(obj.type, obj.python_value))

    @admin.display(description="full history")
    def history_link(self, obj: Setting) -> str:
        return format_html('<a href="../../../settingchange/?key={}">All changes of {}</a>', obj.key, obj.key)

    def save_model(self, request: HttpRequest, obj: Setting, form: Any, change: bool) -> None:
        with acting(request.user.get_username(), Interface.ADMIN):
            obj.save()

    def delete_model(self, request: HttpRequest, obj: Setting) -> None:
        with acting(request.user.get_username(), Interface.ADMIN):
            obj.delete()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Setting]) -> None:
        # One by one: each deletion takes a revision and a history row.
        with acting(request.user.get_username(), Interface.ADMIN):
            for obj in queryset:
                obj.delete()


@admin.register(SettingChange)
class SettingChangeAdmin(admin.ModelAdmin):
    """Who changed what, when, and through which interface."""

    list_display = ["revision", "key", "action", "old", "new", "actor", "interface", "changed_at"]
    list_filter = ["interface", "action", "value_type"]
    search_fields = ["key", "actor"]
    date_hierarchy = "changed_at"

    @admin.display(description="old value")
    def old(self, obj: SettingChange) -> str:
        return preview(obj.value_type, obj.old_value)

    @admin.display(description="new value")
    def new(self, obj: SettingChange) -> str:
        return preview(obj.value_type, obj.new_value)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
