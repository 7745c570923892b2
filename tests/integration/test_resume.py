"""Resume from a revision (DataRequest.since_revision) and tombstones (include_deletions), on a real server.

Every test reads what the server sent with a raw stub: the first message of a
resumed stream (or a resumed Sync) holds only what changed after the revision,
marked ``resumed_from``; tombstones reach only callers that asked for them and
may read the key.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from datastream_app import services
from datastream_app.access import Grant, issue_token
from datastream_app.changes import Entry
from datastream_app.models import Setting, SettingChange
from protos import datastream_pb2
from tests.conftest import serving
from tests.integration.test_wire_compat import FIXTURES, _protoc

pytestmark = pytest.mark.django_db(transaction=True)

# Only live messages deliver: no periodic or gap-triggered resync during a test.
NO_RESYNC = {"RESYNC_INTERVAL": 3600.0, "GAP_GRACE": 3600.0}


def resume(*keys: str, since: int, deletions: bool = False) -> datastream_pb2.DataRequest:
    return datastream_pb2.DataRequest(keys=list(keys), since_revision=since, include_deletions=deletions)


def values(message: datastream_pb2.DataResponse) -> dict[str, bytes | None]:
    """key -> value, None for a tombstone."""
    return {key: None if data.deleted else data.value for key, data in message.data.items()}


@sync_to_async(thread_sensitive=False)
def current_revision() -> int:
    return services.current_revision()


@sync_to_async(thread_sensitive=False)
def delete(key: str) -> int:
    services.delete_setting(setting=Setting.objects.get(key=key))
    return services.current_revision()


async def push(stub, key: str, value: bytes) -> int:
    await stub.PushUpdate(datastream_pb2.Data(key=key, value=value))
    synced = await stub.Sync(datastream_pb2.DataRequest(keys=[key]))
    return synced.data[key].revision


async def read_until(call, predicate, timeout: float = 10.0) -> datastream_pb2.DataResponse:
    """The first message of ``call`` for which ``predicate`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            message = await call.read()
            assert message is not grpc.aio.EOF
            if predicate(message):
                return message


async def until_holding(call, key: str) -> dict[str, tuple[bytes | None, int]]:
    """Every (value or None for a tombstone, revision) ``call`` sends, by key, up to the message holding ``key``."""
    got: dict[str, tuple[bytes | None, int]] = {}
    while key not in got:
        message = await read_until(call, lambda m: bool(m.data))
        got.update({k: (None if d.deleted else d.value, d.revision) for k, d in message.data.items()})
    return got


@pytest.fixture
async def server(demo):
    async with serving(DATASTREAM=NO_RESYNC) as (service, stub):
        yield service, stub


@pytest.mark.parametrize("keys", [("max_connections", "rate_limit", "ratio"), ()], ids=["named-keys", "every-key"])
@pytest.mark.parametrize("cached", [True, False], ids=["hub-cache", "database"])
async def test_subscribe__since_revision__first_message_holds_only_the_changed_keys_then_streams(server, keys, cached):
    _, stub = server
    held = await current_revision()
    changed = await push(stub, "rate_limit", b"2000")
    observer = None
    if cached:
        # Another stream on the keys: the hub caches them, and the resume is answered from the cache.
        observer = stub.Subscribe(datastream_pb2.DataRequest(keys=["max_connections", "rate_limit", "ratio"]))
        await observer.read()

    call = stub.Subscribe(resume(*keys, since=held))
    first = await call.read()

    assert values(first) == {"rate_limit": b"2000"}
    assert first.data["rate_limit"].revision == changed
    assert first.resumed_from == held
    await push(stub, "max_connections", b"11")
    update = await read_until(call, lambda m: "max_connections" in m.data)
    assert values(update) == {"max_connections": b"11"}
    assert update.resumed_from == 0
    call.cancel()
    if observer is not None:
        observer.cancel()


@pytest.mark.parametrize("keys", [("max_connections",), ()], ids=["named-keys", "every-key"])
async def test_subscribe__nothing_changed_since__empty_first_message_then_the_next_change(server, keys):
    _, stub = server
    held = await current_revision()

    call = stub.Subscribe(resume(*keys, since=held))
    first = await call.read()

    assert dict(first.data) == {}
    assert first.resumed_from == held
    await push(stub, "max_connections", b"12")
    update = await read_until(call, lambda m: bool(m.data))
    assert values(update) == {"max_connections": b"12"}
    call.cancel()


async def test_subscribe__changes_up_to_since_revision__never_sent_again(server):
    _, stub = server
    before = await current_revision()
    await push(stub, "max_connections", b"13")
    held = await push(stub, "rate_limit", b"3000")

    # The client holds every revision up to `held`: nothing of it comes back, then only what follows.
    call = stub.Subscribe(resume("max_connections", "rate_limit", since=held))
    first = await call.read()
    await push(stub, "ratio", b"0.75")
    await push(stub, "rate_limit", b"3001")
    update = await read_until(call, lambda m: bool(m.data))

    assert before < held
    assert dict(first.data) == {}
    assert values(update) == {"rate_limit": b"3001"}
    call.cancel()


async def test_subscribe__late_message_at_or_below_since__not_sent(server):
    service, stub = server
    old = (await stub.Sync(datastream_pb2.DataRequest(keys=["rate_limit"]))).data["rate_limit"]
    held = await push(stub, "rate_limit", b"4000")
    call = stub.Subscribe(resume("rate_limit", "max_connections", since=held))
    assert dict((await call.read()).data) == {}

    # A change message that reaches this process late, after the stream resumed past it.
    service.hub.dispatch(
        Entry(key="rate_limit", value_type="int", value=old.value, revision=held - 1, updated_at=timezone.now())
    )
    await push(stub, "max_connections", b"15")
    update = await read_until(call, lambda m: bool(m.data))

    assert values(update) == {"max_connections": b"15"}
    call.cancel()


@pytest.mark.parametrize("since", ["above-current", "history-pruned"])
async def test_subscribe__revision_history_cannot_answer__full_snapshot(server, since):
    _, stub = server
    current = await current_revision()
    if since == "above-current":
        revision = current + 100
    else:
        revision = current - 3
        await sync_to_async(lambda: SettingChange.objects.filter(revision=revision + 1).delete())()

    call = stub.Subscribe(resume("max_connections", "rate_limit", since=revision))
    first = await call.read()
    synced = await stub.Sync(resume(since=revision))

    assert values(first) == {"max_connections": b"10", "rate_limit": b"1000"}
    assert first.resumed_from == 0
    assert synced.resumed_from == 0
    assert len(synced.data) == 7
    call.cancel()


async def test_sync__since_revision__only_the_changed_keys_and_tombstones_if_asked(server):
    _, stub = server
    held = await current_revision()
    await push(stub, "greeting", b"bonjour")
    await delete("ratio")

    every = await stub.Sync(resume(since=held))
    with_deletions = await stub.Sync(resume(since=held, deletions=True))
    named = await stub.Sync(resume("greeting", "max_connections", since=held))
    plain = await stub.Sync(datastream_pb2.DataRequest())

    assert values(every) == {"greeting": b"bonjour"}
    assert every.resumed_from == held
    assert values(with_deletions) == {"greeting": b"bonjour", "ratio": None}
    assert with_deletions.data["ratio"].revision == await current_revision()
    assert with_deletions.data["ratio"].value == b""
    assert values(named) == {"greeting": b"bonjour"}
    assert plain.resumed_from == 0
    assert "ratio" not in plain.data and len(plain.data) == 6


@pytest.mark.parametrize("keys", [("ratio", "max_connections"), ()], ids=["named-keys", "every-key"])
async def test_subscribe__key_deleted_after_since__tombstone_only_when_asked(server, keys):
    _, stub = server
    held = await current_revision()
    deleted_at = await delete("ratio")

    call = stub.Subscribe(resume(*keys, since=held, deletions=True))
    first = await call.read()

    assert values(first) == {"ratio": None}
    assert first.data["ratio"].revision == deleted_at
    call.cancel()
    plain = stub.Subscribe(resume(*keys, since=held))
    if keys:
        # Without tombstones a named key that is gone is unknown, as for a full snapshot.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await plain.read()
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert dict((await plain.read()).data) == {}
        plain.cancel()


async def test_subscribe__deleted_then_created_again__the_new_value_not_a_tombstone(server):
    _, stub = server
    held = await current_revision()
    await delete("ratio")
    await sync_to_async(lambda: Setting.objects.create(key="ratio", value_type="float", value=b"0.25"))()

    call = stub.Subscribe(resume("ratio", since=held, deletions=True))
    first = await call.read()

    assert values(first) == {"ratio": b"0.25"}
    call.cancel()


@pytest.mark.parametrize("keys", [("ratio", "max_connections"), ()], ids=["named-keys", "every-key"])
async def test_stream__key_deleted__tombstone_live_only_to_streams_that_asked(server, keys):
    _, stub = server
    asked = stub.Subscribe(datastream_pb2.DataRequest(keys=list(keys), include_deletions=True))
    plain = stub.Subscribe(datastream_pb2.DataRequest(keys=list(keys)))
    await asked.read()
    await plain.read()

    deleted_at = await delete("ratio")
    await push(stub, "max_connections", b"14")
    got = {name: await until_holding(call, "max_connections") for name, call in (("asked", asked), ("plain", plain))}

    assert got["asked"] == {"ratio": (None, deleted_at), "max_connections": (b"14", deleted_at + 1)}
    # The stream without the flag got the later change and nothing about the deletion: today's behaviour.
    assert got["plain"] == {"max_connections": (b"14", deleted_at + 1)}
    asked.cancel()
    plain.cancel()


@pytest.fixture
async def scoped(demo):
    """A readable app/ key, a secret one, and tokens: app/ only without secrets, every key without secrets, all."""

    def make() -> dict[str, str]:
        Setting.objects.create(key="app/limit", value_type="int", value=b"1")
        Setting.objects.create(key="app/password", value_type="string", value=b"hunter2", secret=True)
        return {
            "app": issue_token(name="app", grants=[Grant("app/", read=True)])[1],
            "other": issue_token(name="other", grants=[Grant("", read=True), Grant("app/", read=False)])[1],
            "secrets": issue_token(name="secrets", grants=[Grant("", read=True, secrets=True)])[1],
        }

    tokens = await sync_to_async(make, thread_sensitive=False)()
    async with serving(DATASTREAM={**NO_RESYNC, "ANONYMOUS_LOOPBACK": False}) as (_, stub):
        yield stub, tokens


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_tombstones__secret_and_read_scope__only_callers_who_may_read_the_key(scoped):
    stub, tokens = scoped
    held = await current_revision()
    streams = {
        name: stub.Subscribe(datastream_pb2.DataRequest(include_deletions=True), metadata=auth(token))
        for name, token in tokens.items()
    }
    for call in streams.values():
        await call.read()

    await delete("app/password")
    await delete("app/limit")
    await delete("ratio")

    # Each stream's messages until the last deletion it may see; any earlier one it may not see would show first.
    seen = {}
    for name, last in (("app", "app/limit"), ("other", "ratio"), ("secrets", "ratio")):
        got: dict[str, bytes | None] = {}
        while last not in got:
            got.update(values(await read_until(streams[name], lambda m: bool(m.data))))
        seen[name] = got
        streams[name].cancel()
    resumed = {
        name: values(await stub.Sync(resume(since=held, deletions=True), metadata=auth(token)))
        for name, token in tokens.items()
    }

    assert seen == {
        "app": {"app/limit": None},
        "other": {"ratio": None},
        "secrets": {"app/password": None, "app/limit": None, "ratio": None},
    }
    assert resumed == seen
    # Named: a secret key the caller may not read is refused as before, deleted or not.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Sync(resume("app/password", since=held, deletions=True), metadata=auth(tokens["app"]))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("keys", [("ratio", "max_connections"), ()], ids=["named-keys", "every-key"])
async def test_original_client__key_deleted__sees_exactly_todays_stream(server, tmp_path: Path, keys):
    service, stub = server
    _protoc(FIXTURES / "original", FIXTURES / "original" / "datastream.proto", tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FIXTURES / "original_watch.py"),
        str(tmp_path),
        f"127.0.0.1:{service.port}",
        *keys,
        stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None

    async def line() -> dict:
        async with asyncio.timeout(30):
            return json.loads(await process.stdout.readline())

    try:
        first = await line()
        await delete("ratio")
        await push(stub, "max_connections", b"16")
        after = await line()
    finally:
        process.kill()
        await process.wait()

    assert first["values"]["ratio"] == "0.5"
    # Data.revision (5) is the one addition every client gets; no resume marker, no tombstone field.
    assert first["unknown"] == [5]
    # Nothing about the deletion: the next message is the later change.
    assert after == {"values": {"max_connections": "16"}, "unknown": [5]}
