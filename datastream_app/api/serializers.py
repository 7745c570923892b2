"""Request and response shapes of the REST API (validation of values lives in services)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from datastream_app.codec import KEY_MAX_LENGTH, VALUE_TYPES

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
    """A push: ``value`` is JSON typed by the key's type; bytes go as base64 text."""

    key = serializers.CharField(max_length=KEY_MAX_LENGTH, trim_whitespace=False)
    value = serializers.JSONField(allow_null=True)
    value_type = serializers.CharField(required=False, allow_blank=True, default="")


class ErrorSerializer(_Serializer):
    """Every error body."""

    code = serializers.CharField()
    detail = serializers.CharField()
    keys = serializers.ListField(child=serializers.CharField(), required=False)
