"""The client library against a real in-process gRPC server.

The server runs on the test's event loop, so every blocking client call goes
through ``asyncio.to_thread``; reads (get, [], in, items) take a lock only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import grpc
import pytest
from asgiref.sync import sync_to_async

from datastream_app.access import Grant, issue_token
from datastream_app.models import ApiToken, Setting
from datastream_client import AsyncClient, Client, InvalidValue, NotFound, Unauthenticated
from datastream_client.client import Change, State
from protos import datastream_pb2
from tests.conftest import serving

EXPECTED = {
    "max_connections": 10,
    "rate_limit": 1000,
    "debug_enabled": False,
    "ratio": 0.5,
    "greeting": "hello",
    "limits": {"a": 1},
    "blob": b"\x00\x01\xff",
}
NEW = {
    "max_connections": 20,
    "rate_limit": -7,
    "debug_enabled": True,
    "ratio": 0.25,
    "greeting": "héllo wörld",
    "limits": {"b": [1, 2.5, None, "x"]},
    "blob": b"\xff\x00 raw",
}

pytestmark = pytest.mark.django_db(transaction=True)


async def started(port: int, **kwargs: Any) -> Client:
    client = Client(f"127.0.0.1:{port}", backoff_cap=0.5, **kwargs)
    await asyncio.to_thread(client.start, 10)
    return client


async def test_get__every_value_type__typed_values(demo):
    async with serving() as (service, _):
        client = await started(service.port)
        try:
            assert {key: client.get(key) for key in EXPECTED} == EXPECTED
            assert {key: type(client[key]) for key in EXPECTED} == {key: type(v) for key, v in EXPECTED.items()}
            assert dict(client.items()) == EXPECTED
            assert client.status.state is State.LIVE
            revisions = await sync_to_async(lambda: [s.revision for s in Setting.objects.all()])()
            assert client.revision == max(revisions)
        finally:
            await asyncio.to_thread(client.close)


async def test_get__unknown_key__key_error_naming_it_unless_a_default_is_given(demo):
    async with serving() as (service, _):
        client = await started(service.port)
        try:
            with pytest.raises(KeyError) as error:
                client.get("no_such_key")
            assert error.value.args == ("no_such_key",)
            with pytest.raises(KeyError, match="no_such_key"):
                client["no_such_key"]
            assert client.get("no_such_key", default=3) == 3
            assert client.get("no_such_key", None) is None
            assert client.get("max_connections", default=3) == 10
            assert "max_connections" in client
            assert "no_such_key" not in client
        finally:
            await asyncio.to_thread(client.close)


async def test_set__every_value_type__round_trips_to_this_and_another_client(demo):
    async with serving() as (service, stub):
        writer = await started(service.port)
        reader = await started(service.port, keys=list(NEW))
        try:
            revisions = {}
            for key, value in NEW.items():
                revisions[key] = await asyncio.to_thread(writer.set, key, value)
                # set returns once this client holds the change (read your writes).
                assert writer.get(key) == value
            assert sorted(revisions.values()) == list(revisions.values())  # one new revision per push, in order
            await asyncio.to_thread(reader.wait_for, revisions["blob"], 10)
            assert {key: reader.get(key) for key in NEW} == NEW
            synced = await stub.Sync(datastream_pb2.DataRequest(keys=list(NEW)))
            assert {key: synced.data[key].revision for key in NEW} == revisions
        finally:
            await asyncio.to_thread(writer.close)
            await asyncio.to_thread(reader.close)


async def test_set__wrong_type__invalid_value_carrying_the_servers_reason(demo):
    async with serving() as (service, stub):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"ten"))
        client = await started(service.port)
        try:
            with pytest.raises(InvalidValue) as error:
                await asyncio.to_thread(client.set, "max_connections", "ten")
            assert error.value.message == refused.value.details() == "'ten' is not an integer"
            assert error.value.code == "INVALID_ARGUMENT"

            # A rule only the server knows: the key's JSON Schema.
            def add_schema() -> None:
                setting = Setting.objects.get(key="limits")
                setting.json_schema = {"type": "object", "properties": {"a": {"minimum": 0}}}
                setting.save()

            await sync_to_async(add_schema)()
            with pytest.raises(InvalidValue, match=r"value does not match the JSON Schema at a: -1 is less than"):
                await asyncio.to_thread(client.set, "limits", {"a": -1})
            with pytest.raises(NotFound, match="unknown key 'nope'"):
                await asyncio.to_thread(client.set, "nope", 1)
            with pytest.raises(NotImplementedError, match="compare-and-set"):
                await asyncio.to_thread(client.set, "max_connections", 1, 5)
            assert client.get("max_connections") == 10
        finally:
            await asyncio.to_thread(client.close)


async def test_callbacks__200_on_50_keys__one_server_stream(transactional_db):
    keys = [f"app/k{i:02}" for i in range(50)]
    for key in keys:
        await sync_to_async(Setting.objects.create)(key=key, value_type="int", value=b"0")
    token, text = await sync_to_async(issue_token)(name="one-stream", grants=[Grant("app/", read=True, write=True)])
    # The server counts Subscribe streams per token and refuses the second one.
    await sync_to_async(ApiToken.objects.filter(pk=token.pk).update)(max_streams=1)
    async with serving() as (service, stub):
        client = await started(service.port, token=text, keys=keys)
        calls: list[tuple[int, str]] = []
        all_called = threading.Event()
        lock = threading.Lock()

        def listener(index: int) -> Any:
            def called(change: Change) -> None:
                with lock:
                    calls.append((index, change.key))
                    if len(calls) == 200:
                        all_called.set()

            return called

        try:
            for index in range(200):
                client.on_change(listener(index), keys=[keys[index % 50]])
            for key in keys:
                await asyncio.to_thread(client.set, key, 1)
            assert await asyncio.to_thread(all_called.wait, 10)
            assert sorted(calls) == [(i, keys[i % 50]) for i in range(200)]
            assert client.status.state is State.LIVE
            metadata = (("authorization", f"Bearer {text}"),)
            second = stub.Subscribe(datastream_pb2.DataRequest(keys=keys[:1]), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await second.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 1 concurrent streams" in refused.value.details()
        finally:
            await asyncio.to_thread(client.close)
        # Closed, the client's stream is gone: the token's one slot is free again.
        third = stub.Subscribe(datastream_pb2.DataRequest(keys=keys[:1]), metadata=metadata)
        first = await third.read()
        assert first.data[keys[0]].value == b"1"
        third.cancel()


async def test_callbacks__slow_and_raising_ones__do_not_stall_updates(demo, caplog):
    async with serving() as (service, stub):
        client = await started(service.port, keys=["max_connections", "rate_limit"])
        release = threading.Event()
        entered = threading.Event()
        seen: list[tuple[str, Any]] = []
        seen_both = threading.Event()

        def slow(change: Change) -> None:
            entered.set()
            release.wait(30)

        def failing(change: Change) -> None:
            raise RuntimeError("callback bug")

        def recording(change: Change) -> None:
            seen.append((change.key, change.value, change.old))
            if len(seen) == 2:
                seen_both.set()

        unsubscribe_slow = client.on_change(slow, keys=["max_connections"])
        client.on_change(failing)
        client.on_change(recording)
        try:
            with caplog.at_level(logging.ERROR, logger="datastream_client"):
                await stub.PushUpdate(datastream_pb2.Data(key="max_connections", value=b"11"))
                assert await asyncio.to_thread(entered.wait, 10)
                # The callback thread is stuck in `slow`; the stream still applies changes.
                await stub.PushUpdate(datastream_pb2.Data(key="rate_limit", value=b"5"))
                synced = await stub.Sync(datastream_pb2.DataRequest(keys=["rate_limit"]))
                await asyncio.to_thread(client.wait_for, synced.data["rate_limit"].revision, 10)
                assert client.get("rate_limit") == 5
                assert not seen
                unsubscribe_slow()
                release.set()
                assert await asyncio.to_thread(seen_both.wait, 10)
            assert seen == [("max_connections", 11, 10), ("rate_limit", 5, 1000)]
            assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("callback bug",)] * 2
            assert client.status.state is State.LIVE
        finally:
            release.set()
            await asyncio.to_thread(client.close)


async def test_wait_for__revision_not_reached__timeout_error(demo):
    async with serving() as (service, _):
        client = await started(service.port)
        try:
            with pytest.raises(TimeoutError, match="not received"):
                await asyncio.to_thread(client.wait_for, client.revision + 1, 0.2)
            assert await asyncio.to_thread(client.wait_for, client.revision, 0) == client.revision
        finally:
            await asyncio.to_thread(client.close)


async def test_start__bad_token__unauthenticated_raised_not_retried(demo):
    async with serving() as (service, _):
        client = Client(f"127.0.0.1:{service.port}", token="ds_nope_nope")
        with pytest.raises(Unauthenticated) as error:
            await asyncio.to_thread(client.start, 10)
        assert error.value.code == "UNAUTHENTICATED"
        assert client.status.state is State.CLOSED


async def test_start__permission_denied__status_failed_with_the_reason(demo):
    _, text = await sync_to_async(issue_token)(name="app-only", grants=[Grant("app/", read=True)])
    async with serving() as (service, _):
        client = Client(f"127.0.0.1:{service.port}", token=text, keys=["max_connections"])
        with pytest.raises(Exception) as error:
            await asyncio.to_thread(client.start, 10)
        assert type(error.value).__name__ == "PermissionDenied"
        assert "max_connections" in error.value.message


async def test_async_client__start_get_set_and_changes(demo):
    async with serving() as (service, _):
        async with AsyncClient(f"127.0.0.1:{service.port}", keys=["max_connections", "greeting"]) as client:
            assert client.get("max_connections") == 10
            assert client["greeting"] == "hello"
            on_loop: list[tuple[str, Any]] = []
            loop_thread = threading.get_ident()
            client.on_change(lambda change: on_loop.append((change.key, threading.get_ident() == loop_thread)))
            changes = client.changes(keys=["greeting"])
            next_change = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0)  # let the iterator subscribe before the push
            revision = await client.set("greeting", "bonjour")
            change = await asyncio.wait_for(next_change, 10)
            assert (change.key, change.value, change.old, change.revision) == ("greeting", "bonjour", "hello", revision)
            assert client.revision >= revision
            assert await client.wait_for(revision, timeout=1) >= revision
            assert on_loop == [("greeting", True)]
            await changes.aclose()
        assert client.status.state is State.CLOSED


def test_every_call__carries_the_client_identity_and_token():
    """A plain gRPC server that records each call's metadata (no datastream logic in the way)."""
    from concurrent import futures

    from datastream_client import __version__
    from datastream_client._wire import default_client_name

    seen: list[tuple[str, str | None, str | None]] = []

    def recorder(method: str, stream: bool = False) -> Any:
        def handle(request: bytes, context: grpc.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata())
            seen.append((method, metadata.get("x-datastream-client"), metadata.get("authorization")))
            if stream:
                ended = threading.Event()
                context.add_callback(ended.set)

                def open_until_cancelled() -> Any:
                    yield b""
                    ended.wait(30)

                return open_until_cancelled()
            if method == "Sync":
                response = datastream_pb2.DataResponse()
                response.data["k"].CopyFrom(datastream_pb2.Data(key="k", value=b"1", value_type="int", revision=4))
                return response.SerializeToString()
            return b""

        if stream:
            return grpc.unary_stream_rpc_method_handler(handle)
        return grpc.unary_unary_rpc_method_handler(handle)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {name: recorder(name) for name in ("ListCapabilities", "Sync", "PushUpdate")}
    handlers["Subscribe"] = recorder("Subscribe", stream=True)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("datastream.DataService", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", token="ds_a_b", keys=["other"], client_name="billing") as client:
            client.capabilities()
            assert client.set("k", 1, value_type="int") == 4
        with Client(f"127.0.0.1:{port}", keys=["other"]) as anonymous:
            anonymous.capabilities()
    finally:
        server.stop(None)
    named = [(method, identity, auth) for method, identity, auth in seen if identity.startswith("billing/")]
    assert sorted(m for m, _, _ in named) == ["ListCapabilities", "PushUpdate", "Subscribe", "Sync"]
    assert {(identity, auth) for _, identity, auth in named} == {(f"billing/{__version__}", "Bearer ds_a_b")}
    others = [(identity, auth) for _, identity, auth in seen if not identity.startswith("billing/")]
    assert set(others) == {(f"{default_client_name()}/{__version__}", None)}
    assert len(others) == 2
