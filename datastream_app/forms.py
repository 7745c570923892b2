"""The admin's setting form: a value widget that fits the type, and the same validation as every interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms

from datastream_app import codec, services
from datastream_app.codec import ValueType
from datastream_app.exceptions import DatastreamError, InvalidArgument
from datastream_app.models import Setting


class BoolInput(forms.CheckboxInput):
    """A checkbox that hands the posted text to the field instead of guessing a bool from it."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        """The raw posted text; an unticked checkbox posts nothing, which is false."""
        # CheckboxInput turns every text but "false" into True, so "no" typed
        # into a value rendered as text (the add form before the type was
        # chosen) would silently store true.
        return data.get(name, False)


class BoolField(forms.BooleanField):
    """A bool value: a ticked checkbox, or the text true/false; any other text is an error."""

    widget = BoolInput
    TRUE = frozenset({"on", "true", "1"})
    FALSE = frozenset({"", "off", "false", "0"})

    def to_python(self, value: Any) -> bool:
        """True or False, or ValidationError for text that is neither."""
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in self.TRUE:
                return True
            if lowered in self.FALSE:
                return False
            raise forms.ValidationError("Enter true or false.", code="invalid")
        return bool(value)


def value_field(kind: ValueType) -> forms.Field:
    """The form field (and so the widget) for a value of ``kind``."""
    if kind is ValueType.BOOL:
        return BoolField(required=False, label="Value", help_text="Checked is true.")
    if kind is ValueType.INT:
        return forms.IntegerField(label="Value", min_value=codec.INT_MIN, max_value=codec.INT_MAX)
    if kind is ValueType.FLOAT:
        return forms.FloatField(label="Value", widget=forms.NumberInput(attrs={"step": "any"}))
    if kind is ValueType.JSON:
        return forms.CharField(
            label="Value",
            strip=False,
            widget=forms.Textarea(attrs={"rows": 12, "class": "vLargeTextField datastream-json"}),
            help_text="JSON text; must match the JSON Schema when one is set.",
        )
    if kind is ValueType.BYTES:
        return forms.CharField(
            label="Value",
            required=False,
            widget=forms.Textarea(attrs={"rows": 4}),
            help_text="Base64 text of the bytes.",
        )
    return forms.CharField(label="Value", required=False, strip=False, widget=forms.Textarea(attrs={"rows": 3}))


if TYPE_CHECKING:
    _SettingModelForm = forms.ModelForm[Setting]
else:
    _SettingModelForm = forms.ModelForm


class SettingForm(_SettingModelForm):
    """Edits a setting; ``value`` is typed by the setting's value type."""

    # Replaced in __init__ by the field that fits the type; declared here so
    # the admin knows the form has it.
    value = forms.CharField(required=False)

    class Meta:
        model = Setting
        fields = ["key", "value_type", "json_schema", "description", "secret"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = self._kind()
        self.fields["value"] = value_field(self.kind)
        if self.instance.pk is not None and not self.is_bound:
            python_value = self.instance.python_value
            self.initial["value"] = (
                python_value
                if self.kind in (ValueType.BOOL, ValueType.INT, ValueType.FLOAT)
                else codec.to_text(self.kind, python_value)
            )

    def _kind(self) -> ValueType:
        if self.instance.pk is not None:
            return ValueType(self.instance.value_type)
        raw = self.data.get("value_type") if self.is_bound else self.initial.get("value_type")
        try:
            return ValueType(raw or ValueType.STRING)
        except ValueError:
            return ValueType.STRING

    def clean_key(self) -> str:
        """Keys follow the one key rule, and stay out of the external stores' mounts."""
        try:
            return services.check_new_key(str(self.cleaned_data["key"]))
        except InvalidArgument as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self) -> dict[str, Any]:
        """Check schema and value with the same service function as REST and gRPC; errors land on their field."""
        cleaned = super().clean() or {}
        schema = cleaned.get("json_schema")
        try:
            services.check_schema(kind=self.kind, schema=schema)
        except InvalidArgument as exc:
            self.add_error("json_schema", exc.message)
            return cleaned
        if "value" not in cleaned:
            return cleaned
        raw = cleaned["value"]
        # Number and checkbox fields hand over typed values; text boxes hand over text.
        typed = self.kind in (ValueType.BOOL, ValueType.INT, ValueType.FLOAT)
        try:
            self.instance.value = services.parse_value(
                kind=self.kind, value=raw if typed else raw or "", encoding="python" if typed else "text", schema=schema
            )
        except DatastreamError as exc:
            self.add_error("value", exc.message)
        return cleaned
