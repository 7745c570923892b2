"""The REST API through DRF's APIClient: capabilities, sync, push, errors, access, schema and health."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import datetime

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from datastream_app.codec import JSON_MAX_DEPTH
from datastream_app.edge import AUTHENTICATION_REQUIRED
from datastream_app.models import Revision, Setting, SettingChange
from protos import datastream_pb2
from tests.conftest import request

pytestmark = pytest.mark.django_db(transaction=True)

CAPABILITIES, SYNC, PUSH = "/api/v1/capabilities", "/api/v1/sync", "/api/v1/push"


@pytest.fixture
def api() -> APIClient:
    """An anonymous client; the test client's REMOTE_ADDR is 127.0.0.1 (loopback)."""
    return APIClient()


def state() -> tuple[dict[str, tuple[bytes, int]], int, int]:
    """Every setting's value and revision, the revision counter and the history length."""
    settings = {s.key: (bytes(s.value), s.revision) for s in Setting.objects.all()}
    return settings, Revision.current(), SettingChange.objects.count()


def staff_with(*codenames: str) -> User:
    """A staff user holding exactly the ``codenames`` permissions."""
    user = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def push_raw(api: APIClient, body: bytes, **extra: str) -> object:
    """POST ``body`` as-is with a JSON content type."""
    return api.post(PUSH, data=body, content_type="application/json", **extra)


# Capabilities


def test_capabilities__demo_settings__every_key_with_its_type_sorted(api, demo):
    response = api.get(CAPABILITIES)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "capabilities": [
            {"key": "blob", "value_type": "bytes"},
            {"key": "debug_enabled", "value_type": "bool"},
            {"key": "greeting", "value_type": "string"},
            {"key": "limits", "value_type": "json"},
            {"key": "max_connections", "value_type": "int"},
            {"key": "rate_limit", "value_type": "int"},
            {"key": "ratio", "value_type": "float"},
        ]
    }


# Sync


def test_sync__comma_separated_keys__those_entries_typed(api, demo):
    response = api.get(SYNC, {"keys": "max_connections,blob"})

    assert response.status_code == 200
    data = response.json()["data"]
    assert list(data) == ["max_connections", "blob"]
    entry = data["max_connections"]
    assert (entry["key"], entry["value"], entry["value_type"]) == ("max_connections", 10, "int")
    assert entry["revision"] == demo["max_connections"].revision
    assert datetime.fromisoformat(entry["updated_at"]) == demo["max_connections"].updated_at
    assert entry["updated_at"].endswith("Z")
    assert (data["blob"]["value"], data["blob"]["value_type"]) == ("AAH/", "bytes")


def test_sync__repeated_and_mixed_keys_params__union_without_duplicates(api, demo):
    response = api.get(f"{SYNC}?keys=ratio&keys=greeting,limits&keys=ratio&keys=")

    assert response.status_code == 200
    data = response.json()["data"]
    assert list(data) == ["ratio", "greeting", "limits"]
    assert (data["ratio"]["value"], data["greeting"]["value"], data["limits"]["value"]) == (0.5, "hello", {"a": 1})


def test_sync__no_keys__every_key_with_typed_values(api, demo):
    response = api.get(SYNC)

    data = response.json()["data"]
    assert {key: entry["value"] for key, entry in data.items()} == {
        "blob": "AAH/",
        "debug_enabled": False,
        "greeting": "hello",
        "limits": {"a": 1},
        "max_connections": 10,
        "rate_limit": 1000,
        "ratio": 0.5,
    }


def test_sync__unknown_keys__404_json_naming_every_missing_key(api, demo):
    response = api.get(SYNC, {"keys": "max_connections,no_such_key,also_missing"})

    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "unknown keys: no_such_key, also_missing",
        "keys": ["no_such_key", "also_missing"],
    }


@pytest.mark.parametrize("key", ["bad key", "nul\x00", "%00", "a" * 256, "ü"])
def test_sync__invalid_key__400_invalid_key(api, demo, key):
    response = api.get(SYNC, {"keys": key})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_key"


def test_sync__more_keys_than_the_limit__413(api, demo, settings):
    settings.DATASTREAM = {**settings.DATASTREAM, "MAX_KEYS_PER_REQUEST": 3}

    response = api.get(SYNC, {"keys": "a,b,c,d"})

    assert response.status_code == 413
    assert response.json() == {"code": "limit_exceeded", "detail": "4 keys requested; the limit is 3 keys per request"}


def test_sync__more_repeated_params_than_django_allows__413_json_not_html(api, demo):
    response = api.get(SYNC + "?" + "&".join(f"keys=k{i}" for i in range(1001)))

    assert response.status_code == 413
    assert response.json()["code"] == "limit_exceeded"
    assert "comma-separated" in response.json()["detail"]


# Push


@pytest.mark.parametrize(
    ("key", "value", "typed", "stored"),
    [
        ("max_connections", 20, 20, b"20"),
        ("max_connections", -(2**63), -(2**63), b"-9223372036854775808"),
        ("debug_enabled", True, True, b"true"),
        ("ratio", 0.125, 0.125, b"0.125"),
        ("ratio", 2, 2.0, b"2.0"),
        ("greeting", "héllo ☃", "héllo ☃", "héllo ☃".encode()),
        ("limits", {"a": [1, None, {"b": "c"}]}, {"a": [1, None, {"b": "c"}]}, b'{"a":[1,null,{"b":"c"}]}'),
        ("limits", None, None, b"null"),
        ("blob", base64.b64encode(b"\x00\xffraw").decode(), base64.b64encode(b"\x00\xffraw").decode(), b"\x00\xffraw"),
    ],
)
def test_push__valid_value_of_each_type__typed_entry_stored_with_revision(api, demo, key, value, typed, stored):
    revision_before = Revision.current()

    response = api.post(PUSH, {"key": key, "value": value}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    setting = Setting.objects.get(key=key)
    assert body == {
        "key": key,
        "value": typed,
        "value_type": setting.value_type,
        "updated_at": setting.updated_at.isoformat().replace("+00:00", "Z"),
        "revision": revision_before + 1,
    }
    assert bytes(setting.value) == stored
    assert setting.revision == revision_before + 1


def test_push__matching_value_type__accepted(api, demo):
    response = api.post(PUSH, {"key": "ratio", "value": 1.5, "value_type": "float"}, format="json")

    assert response.status_code == 200
    assert response.json()["value"] == 1.5


def test_push__anonymous_loopback__history_names_the_address_and_rest(api, demo):
    api.post(PUSH, {"key": "max_connections", "value": 11}, format="json")

    change = SettingChange.objects.get(revision=Revision.current())
    assert (change.key, change.action) == ("max_connections", "update")
    assert (change.actor, change.interface) == ("127.0.0.1", "rest")
    assert (bytes(change.old_value), bytes(change.new_value)) == (b"10", b"11")


def test_push__staff_with_change_permission__history_names_the_user(api, demo):
    api.force_login(staff_with("change_setting"))

    response = api.post(PUSH, {"key": "max_connections", "value": 12}, format="json")

    assert response.status_code == 200
    assert SettingChange.objects.get(revision=Revision.current()).actor == "staff"


def test_push__same_value_again__no_new_revision(api, demo):
    before = state()

    response = api.post(PUSH, {"key": "greeting", "value": "hello"}, format="json")

    assert response.status_code == 200
    assert response.json()["revision"] == demo["greeting"].revision
    assert state() == before


def test_push__json_value_nested_to_the_limit__accepted(api, demo):
    value = "[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH

    response = push_raw(api, b'{"key": "limits", "value": ' + value.encode() + b"}")

    assert response.status_code == 200
    assert bytes(Setting.objects.get(key="limits").value) == value.encode()


@pytest.mark.parametrize(
    ("payload", "status", "code", "detail"),
    [
        ({"key": "max_connections", "value": "ten"}, 400, "invalid_value", "'ten' is not an integer"),
        ({"key": "max_connections", "value": 1.5}, 400, "invalid_value", "'1.5' is not an integer"),
        ({"key": "max_connections", "value": None}, 400, "invalid_value", "'null' is not an integer"),
        ({"key": "max_connections", "value": 2**63}, 400, "invalid_value", "64-bit"),
        ({"key": "max_connections", "value": True}, 400, "invalid_value", "'true' is not an integer"),
        ({"key": "max_connections", "value": "10"}, 400, "invalid_value", "send int values unquoted"),
        ({"key": "debug_enabled", "value": "true"}, 400, "invalid_value", "send bool values unquoted"),
        ({"key": "ratio", "value": "0.5"}, 400, "invalid_value", "'0.5' is not a finite number"),
        ({"key": "greeting", "value": 5}, 400, "invalid_value", "'5' is not a string"),
        ({"key": "greeting", "value": None}, 400, "invalid_value", "'null' is not a string"),
        ({"key": "blob", "value": "not base64!"}, 400, "invalid_value", "base64"),
        ({"key": "blob", "value": [1, 2]}, 400, "invalid_value", "base64"),
        # One level deeper than a value may nest: the body around it is refused before parsing.
        ({"key": "limits", "value": json.loads("[" * 65 + "]" * 65)}, 400, "invalid_argument", "deeper than 65"),
        ({"key": "max_connections", "value": 1, "value_type": "float"}, 400, "type_mismatch", "'int', not 'float'"),
        ({"key": "max_connections", "value": 1, "value_type": "decimal"}, 400, "invalid_value", "decimal"),
        ({"key": "no_such_key", "value": 1}, 404, "not_found", "no_such_key"),
        ({"key": "bad key", "value": 1}, 400, "invalid_key", "bad key"),
        ({"key": "", "value": 1}, 400, "invalid_argument", "key"),
        ({"value": 1}, 400, "invalid_argument", "malformed request: key"),
        ({"key": "max_connections"}, 400, "invalid_argument", "malformed request: value"),
        (
            {"key": "max_connections", "value": 1, "valu_type": "int"},
            400,
            "invalid_argument",
            "unknown field: valu_type",
        ),
        ({"key": "max_connections", "value": 1, "a": 1, "b": 2}, 400, "invalid_argument", "unknown fields: a, b"),
    ],
)
def test_push__bad_request__error_json_and_nothing_changes(api, demo, payload, status, code, detail):
    before = state()

    response = api.post(PUSH, payload, format="json")

    assert response.status_code == status
    body = response.json()
    assert body["code"] == code
    assert detail in body["detail"]
    # No Python type names (NoneType, str, int, dict, list) in what a client reads.
    assert not re.search(r"\b(NoneType|str|dict|list|bytearray|got)\b", body["detail"])
    assert state() == before


def test_push__missing_fields__errors_name_each_field(api, demo):
    response = api.post(PUSH, {}, format="json")

    assert response.json()["fields"] == {"key": ["This field is required."], "value": ["This field is required."]}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "JSON parse error"),
        (b'{"key": "ratio", "value": NaN}', "JSON parse error"),
        (b'{"key": "greeting", "value": "\\ud800"}', "surrogates"),
        (b'{"key": "ratio", "value": ' + b"1" * 400 + b"}", "float range"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"text"', "request body must be a JSON object"),
        (b"\xff\xfe", "JSON parse error"),
        # Deeper than Python's recursion limit: DRF's own parser crashes on this with a 500.
        (b"[" * 100_000, "nests deeper than 65 levels"),
        (b'{"key": "limits", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 65 levels"),
    ],
)
def test_push__malformed_body__400_json_and_nothing_changes(api, demo, body, detail):
    before = state()

    response = push_raw(api, body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    # The README's codes: a malformed request (DRF would say parse_error), or a value that does not fit.
    assert response.json()["code"] == (
        "invalid_value" if detail in ("surrogates", "float range") else "invalid_argument"
    )
    assert detail in response.json()["detail"]
    assert state() == before


def test_push__not_json_content_type__415(api, demo):
    response = api.post(PUSH, data=b'{"key": "greeting", "value": "x"}', content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("key", "value", "size"),
    [
        ("blob", base64.b64encode(b"x" * (1024 * 1024 + 1)).decode(), 1024 * 1024 + 1),
        ("greeting", "x" * (1024 * 1024 + 1), 1024 * 1024 + 1),
        # The limit counts UTF-8 bytes, not characters.
        ("greeting", "é" * (512 * 1024 + 1), 1024 * 1024 + 2),
    ],
    ids=["bytes", "ascii-string", "two-byte-characters"],
)
def test_push__value_over_the_size_limit__413_and_nothing_changes(api, demo, key, value, size):
    before = state()

    response = api.post(PUSH, {"key": key, "value": value}, format="json")

    assert response.status_code == 413
    assert response.json() == {"code": "limit_exceeded", "detail": f"value is {size} bytes; the limit is 1048576 bytes"}
    assert state() == before


def test_push__value_exactly_at_the_size_limit__accepted(api, demo):
    response = api.post(PUSH, {"key": "greeting", "value": "x" * (1024 * 1024)}, format="json")

    assert response.status_code == 200
    assert len(Setting.objects.get(key="greeting").value) == 1024 * 1024


# Access


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "2001:db8::1", "not-an-ip", ""])
def test_api__anonymous_from_non_loopback__401_json_and_nothing_changes(api, demo, address):
    before = state()

    reads = [api.get(CAPABILITIES, REMOTE_ADDR=address), api.get(SYNC, REMOTE_ADDR=address)]
    write = api.post(PUSH, {"key": "max_connections", "value": 99}, format="json", REMOTE_ADDR=address)

    for response in [*reads, write]:
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="datastream"'
        assert response.json() == {"code": "unauthenticated", "detail": AUTHENTICATION_REQUIRED}
    assert state() == before


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1"])
def test_api__anonymous_from_loopback__allowed(api, demo, address):
    assert api.get(CAPABILITIES, REMOTE_ADDR=address).status_code == 200


def test_api__anonymous_loopback_turned_off__401(api, demo, settings):
    settings.DATASTREAM = {**settings.DATASTREAM, "ANONYMOUS_LOOPBACK": False}

    response = api.get(CAPABILITIES)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_push__staff_without_change_permission__403_naming_the_permission(api, demo):
    api.force_login(staff_with("view_setting"))
    before = state()

    response = api.post(PUSH, {"key": "max_connections", "value": 99}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "code": "permission_denied",
        "detail": "user 'staff' lacks the datastream_app.change_setting permission",
    }
    assert state() == before
    # Reading is what the view permission allows.
    assert api.get(SYNC, {"keys": "max_connections"}).json()["data"]["max_connections"]["value"] == 10


def test_sync__staff_without_view_permission__403(api, demo):
    api.force_login(staff_with())

    response = api.get(SYNC)

    assert response.status_code == 403
    assert "datastream_app.view_setting" in response.json()["detail"]


# Schema and health


def test_schema__get__openapi_document_listing_the_three_paths(api, demo):
    response = api.get("/api/v1/schema", {"format": "json"})

    assert response.status_code == 200
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/capabilities", "/api/v1/sync", "/api/v1/push"} <= set(document["paths"])
    assert set(document["paths"]["/api/v1/push"]) == {"post"}
    assert document["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token from the admin: ds_<id>_<secret>",
    }
    assert {"400", "401", "403", "404", "413"} <= set(document["paths"]["/api/v1/push"]["post"]["responses"])
    assert {"400", "401", "403", "404", "413"} <= set(document["paths"]["/api/v1/sync"]["get"]["responses"])


def test_healthz__get__alive_json(api):
    response = api.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz__database_and_layer_up__ready_json(api, transactional_db):
    response = api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": True, "channel_layer": True}}


# Live, across interfaces


async def test_push__rest__reaches_a_live_grpc_subscriber(stub):
    call = stub.Subscribe(request("rate_limit"))
    first = await call.read()

    response = await sync_to_async(APIClient().post)(PUSH, {"key": "rate_limit", "value": 2500}, format="json")
    update = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert first.data["rate_limit"].value == b"1000"
    assert response.status_code == 200
    assert update.data["rate_limit"].value == b"2500"
    assert update.data["rate_limit"].revision == response.json()["revision"]


async def test_sync__after_grpc_push_update__rest_shows_the_new_value(stub):
    await stub.PushUpdate(datastream_pb2.Data(key="limits", value=b'{"a": 2, "b": [true]}', value_type="json"))

    response = await sync_to_async(APIClient().get)(SYNC, {"keys": "limits"})

    entry = response.json()["data"]["limits"]
    assert entry["value"] == {"a": 2, "b": [True]}
    assert entry["value_type"] == "json"
    change = await SettingChange.objects.aget(revision=entry["revision"])
    assert change.interface == "grpc"
