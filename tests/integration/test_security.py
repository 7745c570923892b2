"""Scoped tokens on gRPC and REST, secrets, limits, revocation and TLS, against real servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import grpc
import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from datastream_app.access import Grant, issue_token
from datastream_app.models import ApiToken, Setting, SettingChange
from protos import datastream_pb2, datastream_pb2_grpc
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)

NO_ANONYMOUS = {"ANONYMOUS_LOOPBACK": False, "RESYNC_INTERVAL": 0.2}


@pytest.fixture
def scoped(demo):
    """app/ keys beside the demo settings, and tokens with different grants."""
    Setting.objects.create(key="app/limit", value_type="int", value=b"1")
    Setting.objects.create(key="app/password", value_type="string", value=b"hunter2", secret=True)
    _, reader = issue_token(name="app-reader", grants=[Grant("app/", read=True)])
    _, writer = issue_token(name="app-writer", grants=[Grant("app/", read=True, write=True)])
    _, secrets = issue_token(name="app-secrets", grants=[Grant("app/", read=True, secrets=True)])
    return {"reader": reader, "writer": writer, "secrets": secrets}


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def locked(scoped):
    """A server with anonymous access off, and a stub to it."""
    async with serving(DATASTREAM=NO_ANONYMOUS) as (service, stub):
        yield service, stub, scoped


async def test_grpc__no_token_with_anonymous_off__unauthenticated(locked):
    _, stub, _ = locked

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(request("app/limit"))

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("header", ["Bearer ds_nope_nope", "Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer "])
async def test_grpc__bad_or_malformed_token__unauthenticated(locked, header):
    _, stub, _ = locked

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListCapabilities(datastream_pb2.ListCapabilitiesRequest(), metadata=(("authorization", header),))

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc__health_without_token__still_answers(locked):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    service, _, _ = locked
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
        response = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_grpc__read_token__lists_and_syncs_only_its_prefix(locked):
    _, stub, tokens = locked

    capabilities = await stub.ListCapabilities(
        datastream_pb2.ListCapabilitiesRequest(), metadata=auth(tokens["reader"])
    )
    everything = await stub.Sync(request(), metadata=auth(tokens["reader"]))

    assert [c.key for c in capabilities.capabilities] == ["app/limit", "app/password"]
    # The secret is listed as a capability but its value is withheld.
    assert set(everything.data) == {"app/limit"}


async def test_grpc__key_outside_scope__permission_denied_naming_it(locked):
    _, stub, tokens = locked

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(request("app/limit", "max_connections"), metadata=auth(tokens["reader"]))

    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "max_connections" in error.value.details()


async def test_grpc__secret_without_secret_grant__permission_denied(locked):
    _, stub, tokens = locked

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(request("app/password"), metadata=auth(tokens["reader"]))
    allowed = await stub.Sync(request("app/password"), metadata=auth(tokens["secrets"]))

    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert allowed.data["app/password"].value == b"hunter2"


async def test_grpc__push_without_write_grant__permission_denied_and_nothing_changes(locked):
    _, stub, tokens = locked

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.PushUpdate(datastream_pb2.Data(key="app/limit", value=b"5"), metadata=auth(tokens["reader"]))

    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert bytes((await Setting.objects.aget(key="app/limit")).value) == b"1"


async def test_grpc__push_with_write_grant__stored_and_audited_with_the_token(locked):
    _, stub, tokens = locked

    await stub.PushUpdate(datastream_pb2.Data(key="app/limit", value=b"5"), metadata=auth(tokens["writer"]))

    change = await SettingChange.objects.filter(key="app/limit").afirst()
    assert (bytes(change.new_value), change.actor, change.interface) == (b"5", "token:app-writer", "grpc")


async def test_grpc__subscribe_all_keys__streams_only_readable_non_secret_keys(locked):
    _, stub, tokens = locked
    call = stub.Subscribe(request(), metadata=auth(tokens["reader"]))
    first = await asyncio.wait_for(call.read(), 10)

    # Outside the scope, then a secret, then a readable key: only the last may arrive.
    await sync_to_async(_save)("max_connections", b"77")
    await sync_to_async(_save)("app/password", b"changed")
    await stub.PushUpdate(datastream_pb2.Data(key="app/limit", value=b"9"), metadata=auth(tokens["writer"]))
    update = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert set(first.data) == {"app/limit"}
    assert set(update.data) == {"app/limit"}


def _save(key: str, value: bytes) -> None:
    setting = Setting.objects.get(key=key)
    setting.value = value
    setting.save()


async def test_grpc__token_revoked__open_stream_ends_unauthenticated_within_seconds(locked):
    _, stub, tokens = locked
    call = stub.Subscribe(request("app/limit"), metadata=auth(tokens["reader"]))
    await asyncio.wait_for(call.read(), 10)

    await ApiToken.objects.filter(name="app-reader").aupdate(revoked_at=timezone.now())
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), 10)

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started < 10


async def test_grpc__expired_token__unauthenticated(locked):
    _, stub, _ = locked
    _, text = await sync_to_async(issue_token)(
        name="old", grants=[Grant("")], expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(request("app/limit"), metadata=auth(text))

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.value.details()


async def test_grpc__streams_over_the_token_limit__resource_exhausted_naming_it(scoped):
    async with serving(DATASTREAM={**NO_ANONYMOUS, "MAX_STREAMS_PER_TOKEN": 2}) as (_, stub):
        open_calls = [stub.Subscribe(request("app/limit"), metadata=auth(scoped["reader"])) for _ in range(2)]
        for call in open_calls:
            await asyncio.wait_for(call.read(), 10)
        third = stub.Subscribe(request("app/limit"), metadata=auth(scoped["reader"]))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await asyncio.wait_for(third.read(), 10)
        open_calls[0].cancel()
        await asyncio.sleep(0.2)
        fourth = stub.Subscribe(request("app/limit"), metadata=auth(scoped["reader"]))
        after_one_closed = await asyncio.wait_for(fourth.read(), 10)
        for call in (*open_calls, fourth):
            call.cancel()

    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 concurrent streams per token" in error.value.details()
    assert after_one_closed.data["app/limit"].value == b"1"


async def test_grpc__pushes_over_the_rate__resource_exhausted_naming_it(scoped):
    async with serving(DATASTREAM={**NO_ANONYMOUS, "PUSH_RATE_PER_TOKEN": 2}) as (_, stub):
        codes = []
        for i in range(8):
            try:
                await stub.PushUpdate(
                    datastream_pb2.Data(key="app/limit", value=str(i).encode()), metadata=auth(scoped["writer"])
                )
                codes.append("OK")
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code().name)
                details = exc.details()

    assert codes[:4] == ["OK"] * 4  # the burst: twice the rate
    assert "RESOURCE_EXHAUSTED" in codes
    assert "push rate limit of 2/s" in details


# REST


def test_rest__token__scoped_like_grpc(scoped):
    api = APIClient(REMOTE_ADDR="10.1.2.3")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {scoped['reader']}")

    capabilities = api.get("/api/v1/capabilities").json()["capabilities"]
    outside = api.get("/api/v1/sync", {"keys": "max_connections"})
    secret = api.get("/api/v1/sync", {"keys": "app/password"})
    push = api.post("/api/v1/push", {"key": "app/limit", "value": 3}, format="json")

    assert [c["key"] for c in capabilities] == ["app/limit", "app/password"]
    assert (outside.status_code, outside.json()["code"]) == (403, "permission_denied")
    assert "max_connections" in outside.json()["detail"]
    assert secret.status_code == 403
    assert push.status_code == 403
    assert bytes(Setting.objects.get(key="app/limit").value) == b"1"


def test_rest__write_token__push_audited_with_the_token(scoped):
    api = APIClient(REMOTE_ADDR="10.1.2.3")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {scoped['writer']}")

    response = api.post("/api/v1/push", {"key": "app/limit", "value": 4}, format="json")

    assert response.status_code == 200
    change = SettingChange.objects.filter(key="app/limit").first()
    assert (change.actor, change.interface) == ("token:app-writer", "rest")


def test_rest__bad_token__401_json(scoped):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer ds_0000_wrong")

    response = api.get("/api/v1/sync")

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_rest__pushes_over_the_rate__429(scoped):
    api = APIClient(REMOTE_ADDR="10.1.2.3")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {scoped['writer']}")

    with override_settings(DATASTREAM={"PUSH_RATE_PER_TOKEN": 1}):
        statuses = [
            api.post("/api/v1/push", {"key": "app/limit", "value": i}, format="json").status_code for i in range(5)
        ]

    assert statuses[:2] == [200, 200]
    assert 429 in statuses


def test_rest__session_user_without_csrf_token__403_and_nothing_changes(scoped):
    from django.contrib.auth.models import User

    User.objects.create_superuser("ops", password="pw-123456789")
    api = APIClient(enforce_csrf_checks=True, REMOTE_ADDR="10.1.2.3")
    api.login(username="ops", password="pw-123456789")

    response = api.post("/api/v1/push", {"key": "app/limit", "value": 8}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert bytes(Setting.objects.get(key="app/limit").value) == b"1"


# TLS


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("datastream test CA"))
        .issuer_name(name("datastream test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {}
    for role, san in (("server", x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(f"datastream test {role}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        paths[f"{role}_cert"] = directory / f"{role}.crt"
        paths[f"{role}_key"] = directory / f"{role}.key"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{role}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    paths["ca"] = directory / "ca.crt"
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


async def _sync_over(channel: grpc.aio.Channel) -> bytes:
    response = await datastream_pb2_grpc.DataServiceStub(channel).Sync(request("max_connections"), timeout=5)
    return response.data["max_connections"].value


async def test_tls__certificate_and_key__tls_client_works_and_plaintext_fails(demo, tmp_path):
    certs = _certificates(tmp_path)
    tls = {"CERT": str(certs["server_cert"]), "KEY": str(certs["server_key"]), "CLIENT_CA": None}
    async with serving(GRPC_TLS=tls) as (service, _):
        credentials = grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{service.port}", credentials) as chan:
            value = await _sync_over(chan)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await _sync_over(plain)

    assert value == b"10"
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls__client_ca__client_certificate_required(demo, tmp_path):
    certs = _certificates(tmp_path)
    tls = {"CERT": str(certs["server_cert"]), "KEY": str(certs["server_key"]), "CLIENT_CA": str(certs["ca"])}
    async with serving(GRPC_TLS=tls) as (service, _):
        ca = certs["ca"].read_bytes()
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=certs["client_key"].read_bytes(),
            certificate_chain=certs["client_cert"].read_bytes(),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{service.port}", with_cert) as chan:
            value = await _sync_over(chan)
        without_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        async with grpc.aio.secure_channel(f"127.0.0.1:{service.port}", without_cert) as chan:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await _sync_over(chan)

    assert value == b"10"
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
