"""The gRPC edge beside the REST one: proxies, actor identity, error statuses and messages, the anonymous default."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from asgiref.sync import sync_to_async
from rest_framework.test import APIClient

import datastream_app
from datastream_app import exceptions as errors
from datastream_app.api.exceptions import http_status
from datastream_app.edge import PROXIED_REFUSED, client_host
from datastream_app.models import Setting, SettingChange
from datastream_app.rpc.errors import status_code
from datastream_app.rpc.server import GrpcService
from protos import datastream_pb2, datastream_pb2_grpc
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


# Anonymous loopback behind a proxy


@pytest.mark.parametrize(
    "header",
    [("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=203.0.113.7"), ("x-real-ip", "203.0.113.7")],
    ids=lambda h: h[0],
)
async def test_grpc__anonymous_with_proxy_metadata__unauthenticated_and_nothing_changes(demo, header):
    async with serving() as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as read:
            await stub.Sync(request("max_connections"), metadata=(header,))
        with pytest.raises(grpc.aio.AioRpcError) as write:
            await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"99"), metadata=(header,))
        call = stub.Subscribe(request("max_connections"), metadata=(header,))
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await call.read()
        allowed = await stub.Sync(request("max_connections"))

    for error in (read, write, stream):
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.value.details() == PROXIED_REFUSED
    assert allowed.data["max_connections"].value == b"10"
    assert bytes((await Setting.objects.aget(key="max_connections")).value) == b"10"


# Actor identity


async def _grpc_push(port: int, host: str, value: bytes) -> None:
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        await datastream_pb2_grpc.DataServiceStub(channel).PushUpdate(
            datastream_pb2.Data(key="max_connections", value=value)
        )


async def _actors() -> list[tuple[str, str]]:
    rows = SettingChange.objects.filter(key="max_connections").order_by("revision")
    return [(row.actor, row.interface) async for row in rows]


async def test_actor__tokenless_grpc_pushes_on_two_connections_and_a_rest_push__one_identity(demo):
    async with serving() as (service, _):
        # Two connections: two ephemeral ports, which history must not tell apart.
        await _grpc_push(service.port, "127.0.0.1", b"11")
        await _grpc_push(service.port, "127.0.0.1", b"12")
    response = await sync_to_async(APIClient().post)(
        "/api/v1/push", {"key": "max_connections", "value": 13}, format="json"
    )

    assert response.status_code == 200
    assert (await _actors())[-3:] == [("127.0.0.1", "grpc"), ("127.0.0.1", "grpc"), ("127.0.0.1", "rest")]


async def test_actor__tokenless_grpc_push_over_ipv6__the_host_only(demo):
    service = GrpcService("[::1]:0")
    try:
        await service.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        await _grpc_push(service.port, "[::1]", b"14")
    finally:
        await service.stop(grace=1.0)
    response = await sync_to_async(APIClient(REMOTE_ADDR="::1").post)(
        "/api/v1/push", {"key": "max_connections", "value": 15}, format="json"
    )

    assert response.status_code == 200
    assert (await _actors())[-2:] == [("::1", "grpc"), ("::1", "rest")]


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("ipv4:127.0.0.1:53211", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("ipv6:[::1]:53211", "::1"),
        ("ipv6:%5B::1%5D:53211", "::1"),
        ("::1", "::1"),
        ("unix:/run/datastream.sock", "unix:/run/datastream.sock"),
        (None, ""),
    ],
)
def test_client_host__grpc_peer_or_http_address__the_host(address, host):
    assert client_host(address) == host


# Error statuses


def _every_subclass(cls: type[errors.DatastreamError]) -> list[type[errors.DatastreamError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_every_subclass(sub))
    return found


def test_errors__every_domain_error__an_explicit_grpc_and_http_status():
    # Import every module of the app, so subclasses defined anywhere are seen.
    for module in pkgutil.walk_packages(datastream_app.__path__, "datastream_app."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)
    classes = _every_subclass(errors.DatastreamError)

    assert len(classes) >= 10
    for cls in classes:
        error = cls("x")
        assert status_code(error) not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
        assert 400 <= http_status(error) < 600
        assert http_status(error) != 500
        assert error.code and error.code != "error"


def test_errors__a_subclass_without_statuses__refused_when_defined():
    with pytest.raises(TypeError, match="grpc_status, http_status"):
        type("Forgotten", (errors.DatastreamError,), {"code": "forgotten"})


@pytest.mark.parametrize(
    ("cls", "grpc_code", "http"),
    [
        (errors.InvalidValue, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (errors.LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
        (errors.Throttled, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
        (errors.Aborted, grpc.StatusCode.ABORTED, 409),
    ],
)
def test_errors__readme_table__statuses_on_both_transports(cls, grpc_code, http):
    assert (status_code(cls("x")), http_status(cls("x"))) == (grpc_code, http)


# The same mistake, the same message


@pytest.mark.parametrize(
    ("key", "wire", "json_value"),
    [
        ("max_connections", b"ten", "ten"),
        ("max_connections", b"99999999999999999999", 99999999999999999999),
        ("ratio", b"abc", "abc"),
        ("debug_enabled", b"yes", "yes"),
        ("no_such_key", b"1", 1),
        ("bad key", b"1", 1),
    ],
)
async def test_push__same_mistake_over_grpc_and_rest__same_code_and_message(demo, key, wire, json_value):
    async with serving() as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.PushUpdate(datastream_pb2.Data(key=key, value=wire))
    response = await sync_to_async(APIClient().post)("/api/v1/push", {"key": key, "value": json_value}, format="json")

    assert response.json()["detail"] == error.value.details()
    assert response.json()["code"] in ("invalid_value", "invalid_key", "not_found")


def test_push__non_integer_for_an_int_key__the_message_names_the_value_not_a_python_type(demo):
    api = APIClient()

    response = api.post("/api/v1/push", {"key": "max_connections", "value": None}, format="json")

    assert response.json() == {"code": "invalid_value", "detail": "'null' is not an integer"}


# The anonymous default per profile


def _anonymous_default(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATASTREAM_ANONYMOUS_LOOPBACK")}
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.DATASTREAM['ANONYMOUS_LOOPBACK'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "settings_service.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_settings__anonymous_loopback__on_by_default_only_in_the_embedded_profile(tmp_path):
    production = {"DATABASE_URL": "postgres://u:p@127.0.0.1:9/db", "SECRET_KEY": "x" * 50}

    assert _anonymous_default(DATASTREAM_VAR_DIR=str(tmp_path)) == "True"
    assert _anonymous_default(**production) == "False"
    assert _anonymous_default(**production, DATASTREAM_ANONYMOUS_LOOPBACK="1") == "True"
