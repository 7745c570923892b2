"""Request and response shapes of the REST API (validation of values lives in services)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from datastream_app import codec
from datastream_app.changes import Entry
from datastream_app.codec import KEY_MAX_LENGTH, VALUE_TYPES
from datastream_app.exceptions import InvalidArgument

if TYPE_CHECKING:
    _Serializer = serializers.Serializer[Any]
else:
    _Serializer = serializers.Serializer


class CapabilitySerializer(_Serializer):
    """A key with its value type."""

    key = serializers.CharField()
    value_type = serializers.ChoiceField(choices=VALUE_TYPES)


class CapabilitiesSerializer(_Serializer):
    """The capabilities response."""

    capabilities = CapabilitySerializer(many=True)


class EntrySerializer(_Serializer):
    """A value typed by its value type (bytes as base64), with its revision."""

    key = serializers.CharField()
    value = serializers.JSONField()
    value_type = serializers.ChoiceField(choices=VALUE_TYPES)
    updated_at = serializers.DateTimeField()
    revision = serializers.IntegerField()


class SyncResponseSerializer(_Serializer):
    """The sync response: entries by key."""

    data = serializers.DictField(child=EntrySerializer())  # type: ignore[assignment]  # the response's own field


class PushSerializer(_Serializer):
    """A push: ``value`` is JSON typed by the key's type; bytes go as base64 text. No other field is accepted."""

    key = serializers.CharField(max_length=KEY_MAX_LENGTH, trim_whitespace=False)
    value = serializers.JSONField(allow_null=True)
    value_type = serializers.CharField(required=False, allow_blank=True, default="")

    def to_internal_value(self, data: Any) -> Any:
        """The validated fields; InvalidArgument for a body that is not an object or names an unknown field."""
        if not isinstance(data, dict):
            raise InvalidArgument("request body must be a JSON object")
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise InvalidArgument(
                f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
                f"a push takes {', '.join(self.fields)}"
            )
        return super().to_internal_value(data)


class ErrorSerializer(_Serializer):
    """Every error body."""

    code = serializers.CharField()
    detail = serializers.CharField()
    keys = serializers.ListField(child=serializers.CharField(), required=False)


def entry_json(entry: Entry) -> dict[str, Any]:
    """The REST representation of an entry: the value typed by its value type."""
    kind = codec.ValueType(entry.value_type)
    return {
        "key": entry.key,
        "value": codec.to_json(kind, codec.decode_wire(kind, entry.value)),
        "value_type": entry.value_type,
        "updated_at": entry.updated_at.isoformat().replace("+00:00", "Z"),
        "revision": entry.revision,
    }
