"""The DataService over a real grpc.aio server: every RPC, its errors, and live streaming."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from asgiref.sync import sync_to_async

from datastream_app.models import Setting, SettingChange
from protos import datastream_pb2, datastream_pb2_grpc
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)


async def test_list_capabilities__demo_settings__every_key_with_its_type(stub):
    response = await stub.ListCapabilities(datastream_pb2.ListCapabilitiesRequest())

    assert [(c.key, c.value_type) for c in response.capabilities] == sorted(
        [
            ("blob", "bytes"),
            ("debug_enabled", "bool"),
            ("greeting", "string"),
            ("limits", "json"),
            ("max_connections", "int"),
            ("ratio", "float"),
            ("rate_limit", "int"),
        ]
    )


async def test_sync__named_keys__current_wire_values(stub):
    response = await stub.Sync(request("max_connections", "debug_enabled", "blob"))

    assert set(response.data) == {"max_connections", "debug_enabled", "blob"}
    assert response.data["max_connections"].value == b"10"
    assert response.data["max_connections"].value_type == "int"
    assert response.data["debug_enabled"].value == b"false"
    assert response.data["blob"].value == b"\x00\x01\xff"
    assert response.data["max_connections"].revision > 0
    assert response.data["max_connections"].updated_at.seconds > 0


async def test_sync__no_keys__every_key(stub):
    response = await stub.Sync(request())

    assert len(response.data) == 7


async def test_sync__unknown_key__not_found_naming_it(stub):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(request("max_connections", "no_such_key"))

    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_key" in error.value.details()


async def test_sync__invalid_key__invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(request("../etc/passwd\x00"))

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_push_update__valid_value__stored_with_history(stub):
    await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"20", value_type="int"))

    setting = await Setting.objects.aget(key="max_connections")
    assert bytes(setting.value) == b"20"
    change = await SettingChange.objects.filter(key="max_connections").afirst()
    assert change is not None
    assert (bytes(change.old_value), bytes(change.new_value), change.interface) == (b"10", b"20", "grpc")
    assert change.revision == setting.revision


async def test_push_update__empty_value_type__uses_the_keys_type(stub):
    await stub.PushUpdate(datastream_pb2.Data(key="ratio", value=b"1.25"))

    setting = await Setting.objects.aget(key="ratio")
    assert bytes(setting.value) == b"1.25"


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (datastream_pb2.Data(key="max_connections", value=b"ten", value_type="int"), "INVALID_ARGUMENT", "integer"),
        (datastream_pb2.Data(key="max_connections", value=b"1", value_type="float"), "INVALID_ARGUMENT", "value_type"),
        (datastream_pb2.Data(key="max_connections", value=b"1", value_type="decimal"), "INVALID_ARGUMENT", "decimal"),
        (datastream_pb2.Data(key="debug_enabled", value=b"yes", value_type="bool"), "INVALID_ARGUMENT", "boolean"),
        (datastream_pb2.Data(key="limits", value=b"{not json", value_type="json"), "INVALID_ARGUMENT", "JSON"),
        (datastream_pb2.Data(key="greeting", value=b"\xff\xfe", value_type="string"), "INVALID_ARGUMENT", "UTF-8"),
        (datastream_pb2.Data(key="ratio", value=b"nan", value_type="float"), "INVALID_ARGUMENT", "finite"),
        (datastream_pb2.Data(key="no_such_key", value=b"1", value_type="int"), "NOT_FOUND", "no_such_key"),
        (datastream_pb2.Data(key="", value=b"1"), "INVALID_ARGUMENT", "key"),
        (datastream_pb2.Data(key="blob", value=b"x" * (1024 * 1024 + 1)), "RESOURCE_EXHAUSTED", "limit"),
    ],
)
async def test_push_update__bad_input__status_and_nothing_changes(stub, data, code, reason):
    before = {s.key: (bytes(s.value), s.revision) async for s in Setting.objects.all()}
    history_before = await SettingChange.objects.acount()

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.PushUpdate(data)

    assert error.value.code().name == code
    assert reason in error.value.details()
    after = {s.key: (bytes(s.value), s.revision) async for s in Setting.objects.all()}
    assert after == before
    assert await SettingChange.objects.acount() == history_before


async def test_subscribe__first_message__current_values_of_requested_keys(stub):
    call = stub.Subscribe(request("max_connections", "rate_limit"))
    first = await call.read()
    call.cancel()

    assert {k: v.value for k, v in first.data.items()} == {"max_connections": b"10", "rate_limit": b"1000"}


async def test_subscribe__unknown_key__not_found(stub):
    call = stub.Subscribe(request("max_connections", "missing_key"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()

    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "missing_key" in error.value.details()


async def test_subscribe__push__change_streamed(stub):
    call = stub.Subscribe(request("max_connections"))
    await call.read()

    await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"42", value_type="int"))
    update = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert update.data["max_connections"].value == b"42"


async def test_subscribe__cancelled_stream__its_slot_is_given_back(demo):
    # A token may hold one stream: a second one opens only once the first is
    # cleaned up after its client cancelled it.
    from datastream_app.access import Grant, issue_token

    _, token = await sync_to_async(issue_token)(name="one-stream", grants=[Grant("", read=True, write=True)])
    metadata = (("authorization", f"Bearer {token}"),)
    async with serving(DATASTREAM={"MAX_STREAMS_PER_TOKEN": 1}) as (_, stub):
        first = stub.Subscribe(request("max_connections"), metadata=metadata)
        await first.read()
        refused = stub.Subscribe(request("max_connections"), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as while_open:
            await refused.read()
        first.cancel()
        attempts = 0
        async with asyncio.timeout(10):
            while True:
                attempts += 1
                second = stub.Subscribe(request("max_connections"), metadata=metadata)
                try:
                    snapshot = await second.read()
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    await asyncio.sleep(0.01)
        await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"43"), metadata=metadata)
        update = await asyncio.wait_for(second.read(), 10)
        second.cancel()

    assert while_open.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert snapshot.data["max_connections"].value == b"10"
    assert update.data["max_connections"].value == b"43"


async def test_subscribe__other_key_changes__not_sent(stub):
    call = stub.Subscribe(request("max_connections"))
    await call.read()

    await stub.PushUpdate(datastream_pb2.Data(key="rate_limit", value=b"5"))
    await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"11"))
    update = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert list(update.data) == ["max_connections"]


async def test_subscribe__all_keys__receives_changes_of_any_key(stub):
    call = stub.Subscribe(request())
    first = await call.read()

    await stub.PushUpdate(datastream_pb2.Data(key="greeting", value="héllo".encode()))
    update = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert len(first.data) == 7
    assert update.data["greeting"].value == "héllo".encode()


async def test_subscribe__code_saves_model__change_streamed_in_revision_order(stub):
    call = stub.Subscribe(request("max_connections", "rate_limit"))
    await call.read()

    def save_both() -> None:
        for key, value in (("max_connections", b"1"), ("rate_limit", b"2"), ("max_connections", b"3")):
            setting = Setting.objects.get(key=key)
            setting.value = value
            setting.save()

    await sync_to_async(save_both)()
    seen: dict[str, tuple[int, bytes]] = {}
    revisions = []
    while seen.get("max_connections", (0, b""))[1] != b"3" or "rate_limit" not in seen:
        message = await asyncio.wait_for(call.read(), 10)
        # One message may merge several keys (a protobuf map has no order):
        # order holds between messages, so compare each message's revisions as a set.
        message_revisions = sorted(data.revision for data in message.data.values())
        assert not revisions or message_revisions[0] > revisions[-1]
        revisions.extend(message_revisions)
        for key, data in message.data.items():
            seen[key] = (data.revision, data.value)
    call.cancel()

    assert seen["rate_limit"][1] == b"2"
    assert seen["max_connections"][1] == b"3"


async def test_server_stop__open_stream__ends_with_unavailable(demo):
    from datastream_app.rpc.server import GrpcService

    service = GrpcService("127.0.0.1:0")
    await service.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
        from protos import datastream_pb2_grpc

        call = datastream_pb2_grpc.DataServiceStub(chan).Subscribe(request("max_connections"))
        await call.read()
        await service.stop(grace=5.0)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health__running_server__serving_for_all_and_for_the_service(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    service = await health.Check(health_pb2.HealthCheckRequest(service="datastream.DataService"))

    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert service.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_watch__status_changes__streamed_to_the_watcher(grpc_service, channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="datastream.DataService"))
    first = await asyncio.wait_for(call.read(), 10)
    await grpc_service.health.set("datastream.DataService", health_pb2.HealthCheckResponse.NOT_SERVING)
    second = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection__list_services__datastream_health_and_reflection(channel):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()

    names = {s.name for s in response.list_services_response.service}
    assert {"datastream.DataService", "grpc.health.v1.Health"} <= names


async def test_malformed_request_bytes__each_rpc__invalid_argument(channel):
    for method, streaming in (
        ("ListCapabilities", False),
        ("Sync", False),
        ("PushUpdate", False),
        ("Subscribe", True),
    ):
        path = f"/datastream.DataService/{method}"
        garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length prefix far beyond the buffer
        if streaming:
            call = channel.unary_stream(path)(garbage)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call.read()
        else:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await channel.unary_unary(path)(garbage)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert "malformed" in error.value.details()


async def test_subscribe__key_deleted_while_others_watch_it__new_subscriber_gets_not_found(stub):
    watching = stub.Subscribe(request("ratio", "rate_limit"))
    await watching.read()
    await sync_to_async(lambda: Setting.objects.get(key="ratio").delete())()
    # Changes reach the hub in revision order: once the watcher holds a change
    # made after the deletion, the hub has seen the deletion too.
    await stub.PushUpdate(datastream_pb2.Data(key="rate_limit", value=b"7"))
    after = await asyncio.wait_for(watching.read(), 10)
    assert after.data["rate_limit"].value == b"7"

    late = stub.Subscribe(request("ratio"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await late.read()
    watching.cancel()

    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_subscribe__second_subscriber__snapshot_from_the_hub_equals_the_database(stub):
    first = stub.Subscribe(request("max_connections", "limits"))
    await first.read()
    await stub.PushUpdate(datastream_pb2.Data(key="limits", value=b'{"b":2}'))
    await asyncio.wait_for(first.read(), 10)

    second = stub.Subscribe(request("max_connections", "limits"))
    snapshot = await second.read()
    synced = await stub.Sync(request("max_connections", "limits"))
    first.cancel()
    second.cancel()

    assert {k: (v.value, v.revision) for k, v in snapshot.data.items()} == {
        k: (v.value, v.revision) for k, v in synced.data.items()
    }


async def test_sync_and_subscribe__more_keys_than_the_limit__resource_exhausted_naming_it(demo):
    from django.test import override_settings

    from datastream_app.rpc.server import GrpcService
    from protos import datastream_pb2_grpc

    with override_settings(DATASTREAM={"MAX_KEYS_PER_REQUEST": 2}):
        service = GrpcService("127.0.0.1:0")
        await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
                stub = datastream_pb2_grpc.DataServiceStub(chan)
                with pytest.raises(grpc.aio.AioRpcError) as sync_error:
                    await stub.Sync(request("max_connections", "rate_limit", "ratio"))
                with pytest.raises(grpc.aio.AioRpcError) as subscribe_error:
                    await stub.Subscribe(request("max_connections", "rate_limit", "ratio")).read()
                within = await stub.Sync(request("max_connections", "rate_limit"))
        finally:
            await service.stop(grace=1.0)

    for error in (sync_error, subscribe_error):
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.value.details() == "3 keys requested; the limit is 2 keys per request"
    assert set(within.data) == {"max_connections", "rate_limit"}


@pytest.mark.django_db(transaction=True)
async def test_rpc_log_line__names_the_client_identity_sanitised_and_truncated(grpc_service, caplog):
    caplog.set_level(logging.INFO, logger="datastream.rpc")
    identities = {"plain": "billing/1.2", "spaced": "evil name client=forged " + "x" * 200, "none": None}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_service.port}") as chan:
        stub = datastream_pb2_grpc.DataServiceStub(chan)
        for identity in identities.values():
            metadata = () if identity is None else (("x-datastream-client", identity),)
            await stub.Sync(datastream_pb2.DataRequest(keys=["max_connections"]), metadata=metadata)

    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("rpc method=/datastream.DataService/Sync")
    ]
    clients = [line.rsplit(" client=", 1)[1] for line in lines]
    assert clients == ["billing/1.2", "evil?name?client=forged?" + "x" * 76 + "...", "-"]
