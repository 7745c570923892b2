"""Request and response shapes of the REST API (validation of values lives in services)."""

from __future__ import annotations

from rest_framework import serializers

from datastream_app.codec import KEY_MAX_LENGTH, VALUE_TYPES


class CapabilitySerializer(serializers.Serializer):
    """A key with its value type."""

    key = serializers.CharField()
    value_type = serializers.ChoiceField(choices=VALUE_TYPES)


class CapabilitiesSerializer(serializers.Serializer):
    """The capabilities response."""

    capabilities = CapabilitySerializer(many=True)


class EntrySerializer(serializers.Serializer):
    """A value typed by its value type (bytes as base64), with its revision."""

    key = serializers.CharField()
    value = serializers.JSONField()
    value_type = serializers.ChoiceField(choices=VALUE_TYPES)
    updated_at = serializers.DateTimeField()
    revision = serializers.IntegerField()


class SyncResponseSerializer(serializers.Serializer):
    """The sync response: entries by key."""

    data = serializers.DictField(child=EntrySerializer())


class PushSerializer(serializers.Serializer):
    """A push: ``value`` is JSON typed by the key's type; bytes go as base64 text."""

    key = serializers.CharField(max_length=KEY_MAX_LENGTH, trim_whitespace=False)
    value = serializers.JSONField(allow_null=True)
    value_type = serializers.CharField(required=False, allow_blank=True, default="")


class ErrorSerializer(serializers.Serializer):
    """Every error body."""

    code = serializers.CharField()
    detail = serializers.CharField()
    keys = serializers.ListField(child=serializers.CharField(), required=False)
