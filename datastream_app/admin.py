"""Admin: typed settings, their history and audit trail, API tokens, and the external stores' state."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.filters import FieldListFilter, ListFilter
from django.contrib.admin.utils import flatten_fieldsets, get_fields_from_path
from django.db.models import BooleanField, Model, QuerySet, Value
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from datastream_app import access, codec, services
from datastream_app.audit import Interface, acting
from datastream_app.forms import SettingForm
from datastream_app.models import ApiToken, MirroredEntry, Setting, SettingChange, StoreStatus, TokenGrant

if TYPE_CHECKING:
    SettingAdminBase = admin.ModelAdmin[Setting]
    SettingChangeAdminBase = admin.ModelAdmin[SettingChange]
    TokenAdminBase = admin.ModelAdmin[ApiToken]
    GrantInlineBase = admin.TabularInline[TokenGrant, ApiToken]
    MirroredAdminBase = admin.ModelAdmin[MirroredEntry]
    StatusAdminBase = admin.ModelAdmin[StoreStatus]
else:
    SettingAdminBase = SettingChangeAdminBase = TokenAdminBase = MirroredAdminBase = StatusAdminBase = admin.ModelAdmin
    GrantInlineBase = admin.TabularInline

_M = TypeVar("_M", bound=Model)

# The admin's "View site" link: the live values as clients get them (Django's default, "/", has no page).
admin.site.site_url = "/api/v1/sync"

PREVIEW_CHARS = 80
MASK = "••••••"
MASKED_HINT = "Value masked for users without the view secret setting permission"
# Rows of the key's history shown on its change page; the rest are a link away.
RECENT_CHANGES = 10
# Set on every object an admin queryset returns: whether the user of the request
# that fetched it may see secret values. Display methods read it from the object,
# so nothing about a request is kept on the admin instances, which every
# request (and thread, and ASGI task) shares.
REVEAL = "datastream_reveal"


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


def with_reveal(queryset: QuerySet[_M], request: HttpRequest) -> QuerySet[_M]:
    """``queryset`` with each object marked for whether ``request``'s user may see secret values."""
    annotated: QuerySet[_M] = queryset.annotate(
        **{REVEAL: Value(may_see_secrets(request), output_field=BooleanField())}
    )
    return annotated


def masked(obj: Any, secret: bool, value_type: str, raw: bytes | memoryview | None) -> str:
    """The preview of ``raw``, or the mask when it is secret and ``obj`` was not fetched for a user who may see it."""
    if secret and raw is not None and not getattr(obj, REVEAL, False):
        return MASK
    return preview(value_type, raw)


class _OfferedLookupsOnly:
    """Query-string filters limited to those the list's filters and date hierarchy offer.

    Django's default lets any lookup on a model's own fields through, so
    ``?value__startswith=…`` would tell a right guess of a secret from a wrong
    one by the row count. Anything else is refused the same way for every
    value and user: Django answers 400 (DisallowedModelAdminLookup).
    Search (``q``), ordering, paging and the like are not lookups and stay.
    """

    # Lookups offered by links rather than filters, e.g. the changes of one key.
    linked_lookups: tuple[str, ...] = ()

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        return lookup in self.offered_lookups(request)

    def offered_lookups(self, request: HttpRequest) -> set[str]:
        """The query-string parameters the list filters, the date hierarchy and our links produce."""
        model_admin = cast("admin.ModelAdmin[Any]", self)
        offered = set(self.linked_lookups)
        for item in model_admin.get_list_filter(request):
            offered.update(name for name in list_filter(model_admin, request, item).expected_parameters() if name)
        if model_admin.date_hierarchy:
            offered.update(f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day"))
        return offered


def list_filter(model_admin: admin.ModelAdmin[Any], request: HttpRequest, item: Any) -> ListFilter:
    """The filter an entry of ``list_filter`` makes: a field path, (field path, filter class) or a filter class."""
    if isinstance(item, str | list | tuple):
        path, filter_class = (item, FieldListFilter.create) if isinstance(item, str) else item
        field = get_fields_from_path(model_admin.model, path)[-1]
        return cast(ListFilter, filter_class(field, request, {}, model_admin.model, model_admin, field_path=path))
    return cast(ListFilter, item(request, {}, model_admin.model, model_admin))


class SchemaField(forms.JSONField):
    """The JSON Schema box: empty, not ``null``, when there is no schema."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


def clipped(text: str) -> str:
    """A value preview for a list cell: one line, cut by CSS to the column, the whole preview on hover."""
    return format_html('<span class="datastream-preview" title="{}">{}</span>', text, text)


def compact_time(moment: datetime) -> str:
    """A list cell's time: narrow and sortable by eye, unlike Django's "Dec. 2, 2026, 3:31 a.m."."""
    return date_format(timezone.localtime(moment), "Y-m-d H:i:s")


def changes_url(key: str) -> str:
    """The Setting changes list filtered to ``key``."""
    return reverse("admin:datastream_app_settingchange_changelist") + "?" + urlencode({"key": key})


@admin.register(Setting)
class SettingAdmin(_OfferedLookupsOnly, SettingAdminBase):
    """Typed settings; every save is published to subscribers after commit."""

    form = SettingForm
    # Narrow columns, so that beside the navigation and the filter panel a 1280 px
    # window shows them all (about 630 px are left for the table).
    list_display = ["key", "kind", "value_preview", "secret_flag", "revision", "updated"]
    list_filter = ["value_type", "secret"]
    search_fields = ["key", "description"]
    readonly_fields = ["revision", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Setting]:
        return with_reveal(super().get_queryset(request), request)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "json_schema":
            kwargs["form_class"] = SchemaField
            kwargs.setdefault("label", "JSON Schema")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Setting | None = None) -> list[str]:  # type: ignore[override]
        # Who may not edit (or may not see a secret) gets the read-only display;
        # the admin would otherwise show the model field itself, wire bytes as b'10'.
        editable = obj is None or (
            self.has_change_permission(request, obj) and (not obj.secret or may_see_secrets(request))
        )
        fields = ["key", "value_type", "value" if editable else "current_value", "json_schema", "description", "secret"]
        if obj is not None and obj.value_type != codec.ValueType.JSON:
            fields.remove("json_schema")  # only json values have a schema
        return fields + (["revision", "updated_at"] if obj is not None else [])

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
        return clipped(masked(obj, obj.secret, obj.value_type, obj.value))

    @admin.display(description="type", ordering="value_type")
    def kind(self, obj: Setting) -> str:
        return obj.value_type

    @admin.display(description="updated at", ordering="updated_at")
    def updated(self, obj: Setting) -> str:
        return compact_time(obj.updated_at)

    @admin.display(description="secret", ordering="secret", empty_value="")
    def secret_flag(self, obj: Setting) -> str:
        # A mark where it matters; Django's boolean column put a red cross on every ordinary row.
        return (
            format_html('<span class="datastream-secret" title="{}">secret</span>', MASKED_HINT) if obj.secret else ""
        )

    @admin.display(description="value")
    def current_value(self, obj: Setting) -> str:
        if obj.secret and not getattr(obj, REVEAL, False):
            return MASK
        return format_html('<pre class="datastream-value">{}</pre>', codec.to_text(obj.type, obj.python_value))

    def recent_changes(self, request: HttpRequest, obj: Setting) -> dict[str, Any]:
        """The latest changes of ``obj`` for its change page: a table, never form fields, and a link to the rest."""
        rows = with_reveal(obj.history.order_by("-revision"), request)[:RECENT_CHANGES]
        return {
            "rows": [
                {
                    "revision": row.revision,
                    "action": row.action,
                    "old": masked(row, row.secret, row.value_type, row.old_value),
                    "new": masked(row, row.secret, row.value_type, row.new_value),
                    "actor": row.actor,
                    "interface": row.get_interface_display(),
                    "changed_at": compact_time(row.changed_at),
                }
                for row in rows
            ],
            "total": obj.history.count(),
            "url": changes_url(obj.key),
        }

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Setting | None = None,
    ) -> Any:
        if obj is not None:
            context["datastream_history"] = self.recent_changes(request, obj)
            context["datastream_changes_url"] = changes_url(obj.key)
        return super().render_change_form(request, context, add, change, form_url, obj)

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
class SettingChangeAdmin(_OfferedLookupsOnly, SettingChangeAdminBase):
    """Who changed what, when, and through which interface (users and tokens alike)."""

    # Few, narrow columns: see SettingAdmin.list_display.
    list_display = ["revision", "key", "action", "value_change", "by", "changed"]
    list_filter = ["interface", "action", "value_type", "store", "actor"]
    search_fields = ["key", "actor"]
    date_hierarchy = "changed_at"
    # A setting's History button and its change page link to ?key=<key>.
    linked_lookups = ("key", "key__exact")

    def get_queryset(self, request: HttpRequest) -> QuerySet[SettingChange]:
        return with_reveal(super().get_queryset(request), request)

    @admin.display(description="old → new value")
    def value_change(self, obj: SettingChange) -> str:
        old = masked(obj, obj.secret, obj.value_type, obj.old_value)
        new = masked(obj, obj.secret, obj.value_type, obj.new_value)
        return format_html("{} → {}", clipped(old), clipped(new))

    @admin.display(description="changed at", ordering="changed_at")
    def changed(self, obj: SettingChange) -> str:
        return compact_time(obj.changed_at)

    @admin.display(description="by", ordering="actor")
    def by(self, obj: SettingChange) -> str:
        where = f"{obj.get_interface_display()}, store {obj.store}" if obj.store else obj.get_interface_display()
        return format_html('{} <span class="datastream-quiet">({})</span>', obj.actor or "—", where)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        key = request.GET.get("key") or request.GET.get("key__exact")
        if key:
            extra_context = {"title": f"Changes of {key}", **(extra_context or {})}
        return super().changelist_view(request, extra_context)

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
class ApiTokenAdmin(_OfferedLookupsOnly, TokenAdminBase):
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
class MirroredEntryAdmin(_OfferedLookupsOnly, MirroredAdminBase):
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
class StoreStatusAdmin(_OfferedLookupsOnly, StatusAdminBase):
    """Whether each external store was read recently, and which process watches it."""

    list_display = ["alias", "ok", "checked_at", "error", "leader", "lease_until"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
