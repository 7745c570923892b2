"""The service functions every interface calls: one set of rules for a value, and what a caller may learn."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from datastream_app import services
from datastream_app.access import Grant, Principal
from datastream_app.codec import ValueType
from datastream_app.exceptions import InvalidValue, LimitExceeded
from datastream_app.models import Setting, SettingChange
from datastream_app.stores.git import GitStore
from datastream_app.stores.memory import MemoryStore
from datastream_app.stores.model import ModelStore
from datastream_app.stores.s3 import S3Store
from datastream_app.stores.sql import SQLStore

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA = {"type": "string", "enum": ["hunter2-alpha", "hunter2-beta"]}
WRITER = Principal(name="writer", kind="token", grants=(Grant("", read=True, write=True, secrets=False),))
READER_OF_SECRETS = Principal(name="ops", kind="token", grants=(Grant("", read=True, write=True, secrets=True),))


def secret_setting() -> Setting:
    return Setting.objects.create(
        key="app/password", value_type="json", value=b'"hunter2-alpha"', json_schema=SCHEMA, secret=True
    )


@pytest.mark.parametrize("encoding", ["json", "wire"])
def test_push__secret_key_schema_violation_by_writer_without_secret_read__message_quotes_no_schema_value(encoding):
    secret_setting()
    value = "guess" if encoding == "json" else b'"guess"'

    with pytest.raises(InvalidValue) as caught:
        services.push(key="app/password", value=value, encoding=encoding, principal=WRITER)

    assert "hunter2" not in caught.value.message
    assert caught.value.message == "value does not match the JSON Schema of this secret setting"


def test_push__secret_key_schema_violation_by_secret_reader__message_names_the_violation():
    secret_setting()

    with pytest.raises(InvalidValue, match="hunter2-alpha"):
        services.push(key="app/password", value="guess", encoding="json", principal=READER_OF_SECRETS)


def test_push__secret_key_wrong_type_by_writer_without_secret_read__type_error_still_explained():
    secret_setting()

    with pytest.raises(InvalidValue, match="not valid JSON"):
        services.push(key="app/password", value=b"{", encoding="wire", principal=WRITER)


def test_push__current_value_of_a_secret_by_writer_without_secret_read__takes_a_revision_like_any_other_value():
    setting = secret_setting()

    right = services.push(key="app/password", value="hunter2-alpha", encoding="json", principal=WRITER)
    wrong = services.push(key="app/password", value="hunter2-beta", encoding="json", principal=WRITER)

    # A right guess and a wrong one answer alike: each takes the next revision.
    assert (right.revision, wrong.revision) == (setting.revision + 1, setting.revision + 2)
    assert SettingChange.objects.filter(key="app/password").count() == 3


def test_push__current_value_by_secret_reader__no_new_revision():
    setting = secret_setting()

    entry = services.push(key="app/password", value="hunter2-alpha", encoding="json", principal=READER_OF_SECRETS)

    assert entry.revision == setting.revision


@pytest.mark.parametrize(
    ("encoding", "value"),
    [("wire", b"12"), ("json", 12), ("text", " 12 "), ("python", 12)],
)
def test_parse_value__each_interface_encoding__same_canonical_wire_bytes(encoding, value):
    assert services.parse_value(kind=ValueType.INT, value=value, encoding=encoding) == b"12"


def test_parse_value__over_the_size_limit__limit_exceeded(settings):
    settings.DATASTREAM = {**settings.DATASTREAM, "MAX_VALUE_BYTES": 4}

    with pytest.raises(LimitExceeded, match="the limit is 4 bytes"):
        services.parse_value(kind=ValueType.STRING, value="hello", encoding="json")


@pytest.mark.parametrize(
    ("backend", "required"),
    [
        (ModelStore, {}),
        (MemoryStore, {}),
        (GitStore, {"remote": "/nonexistent"}),
        (S3Store, {"bucket": "b"}),
        (SQLStore, {"url": "sqlite:///nonexistent.sqlite3"}),
    ],
)
def test_store_options__unknown_name__improperly_configured_naming_store_and_option(backend, required):
    with pytest.raises(ImproperlyConfigured, match=r"\['typo'\]\[\"OPTIONS\"\] has unknown options: pol_interval"):
        backend(alias="typo", prefix="x/", pol_interval=1, **required)
