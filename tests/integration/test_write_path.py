"""Every interface writing the same keys at once: admin form posts, REST and gRPC pushes, an external store's watcher.

One HTTP server (uvicorn serving the project's ASGI app) and one gRPC server run
in this process against the profile's database (SQLite embedded, PostgreSQL in
production). Writers run in threads, each writing values no other writer uses,
so every history row can be traced to the one write that made it. Afterwards:

- every write that was answered as successful has exactly one history row;
- each key's history is an unbroken chain (each row's old value is the previous
  row's new value) with strictly increasing revisions, ending at the stored value;
- no write failed for any reason but the one a conflict is allowed to give
  (ABORTED / 409 for a key whose source moved on), so no 500, no deadlock;
- on PostgreSQL, the database counted no deadlock;
- every subscriber saw each key's revisions only go up and ends equal to Sync.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import uvicorn
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from datastream_app import access
from datastream_app.models import MirroredEntry, Setting, SettingChange
from datastream_app.stores.memory import MemoryStore
from protos import datastream_pb2, datastream_pb2_grpc
from tests.admin_session import AdminSession
from tests.conftest import request, serving
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

SETTING_KEYS = ("max_connections", "rate_limit")
STORE_KEY = "mem/limit"
ROUNDS = int(os.environ.get("DATASTREAM_WRITE_ROUNDS", "30"))
PASSWORD = "write-path-password"
STORES = {
    "mem": {
        "BACKEND": "datastream_app.stores.memory.MemoryStore",
        "PREFIX": "mem/",
        "OPTIONS": {"poll_interval": 0.05},
    },
    "default": {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""},
}


@dataclass
class Outcomes:
    """What the writers were told: the values acknowledged per key, and every failure."""

    acknowledged: dict[str, list[bytes]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, key: str, value: int) -> None:
        with self.lock:
            self.acknowledged.setdefault(key, []).append(str(value).encode())

    def failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def conflict(self, key: str, what: str) -> None:
        # A write through an external store loses to an outside change it did not see: allowed there only.
        with self.lock:
            (self.conflicts if key == STORE_KEY else self.failures).append(what)


@pytest.fixture
def http_port(transactional_db: Any) -> Iterator[int]:
    """The project's ASGI app served by uvicorn on a free loopback port, in a thread of this process."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            "settings_service.asgi:application", host="127.0.0.1", port=port, lifespan="off", log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _setup() -> str:
    """Demo settings, an admin user, the outside source of the store key, and a read-write token."""
    Setting.objects.create(key="max_connections", value_type="int", value=b"10")
    Setting.objects.create(key="rate_limit", value_type="int", value=b"1000")
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    MemoryStore.forget("mem")
    _, token = access.issue_token(name="writer", grants=[access.Grant("", read=True, write=True, secrets=True)])
    return token


def _deadlocks() -> int:
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _admin_writer(port: int, values: Iterator[int], out: Outcomes) -> None:
    session = AdminSession(port)
    session.login("ops", PASSWORD)
    paths = {key: session.change_path(key) for key in SETTING_KEYS}
    for _ in range(ROUNDS):
        for key in SETTING_KEYS:
            value = next(values)
            status, page = session.save(paths[key], str(value))
            if status == 302:
                out.ok(key, value)
            else:
                out.failed(f"admin {key}={value}: HTTP {status} {page[:300]}")


def _rest_writer(port: int, token: str, values: Iterator[int], out: Outcomes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        for _ in range(ROUNDS):
            for key in (*SETTING_KEYS, STORE_KEY):
                value = next(values)
                conn.request("POST", "/api/v1/push", json.dumps({"key": key, "value": value}), headers)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    out.ok(key, value)
                elif response.status == 409:
                    out.conflict(key, f"REST {key}={value}: 409")
                else:
                    out.failed(f"REST {key}={value}: HTTP {response.status} {body[:300]!r}")
    finally:
        conn.close()


def _grpc_writer(port: int, token: str, values: Iterator[int], out: Outcomes) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = datastream_pb2_grpc.DataServiceStub(channel)
        for _ in range(ROUNDS):
            for key in (*SETTING_KEYS, STORE_KEY):
                value = next(values)
                data = datastream_pb2.Data(key=key, value=str(value).encode(), value_type="int")
                try:
                    stub.PushUpdate(data, metadata=[("authorization", f"Bearer {token}")], timeout=60)
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.ABORTED:
                        out.conflict(key, f"gRPC {key}={value}: ABORTED")
                    else:
                        out.failed(f"gRPC {key}={value}: {error.code().name} {error.details()}")
                else:
                    out.ok(key, value)


def _outside_writer(values: Iterator[int]) -> None:
    # Another program changing the store's source; the watcher lists it every 50 ms.
    source = MemoryStore.source("mem")
    for _ in range(ROUNDS):
        source.set(STORE_KEY, "int", str(next(values)).encode())
        threading.Event().wait(0.005)


def _check_history(key: str, acknowledged: list[bytes], initial: bytes) -> None:
    rows = list(SettingChange.objects.filter(key=key).order_by("revision"))
    assert rows, f"{key}: no history"
    assert rows[0].old_value is None or bytes(rows[0].old_value) == initial
    for before, after in itertools.pairwise(rows):
        assert after.revision > before.revision
        assert bytes(after.old_value) == bytes(before.new_value), (
            f"{key}: history breaks at revision {after.revision}: old {bytes(after.old_value)!r}, "
            f"previous new {bytes(before.new_value)!r}"
        )
    written = [bytes(row.new_value) for row in rows]
    for value in acknowledged:
        assert written.count(value) == 1, f"{key}: acknowledged {value!r} has {written.count(value)} history rows"


@dataclass
class Subscriber:
    """A Subscribe stream read in the test's loop, remembering each key's value and every revision it saw."""

    stub: datastream_pb2_grpc.DataServiceStub
    token: str
    latest: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    backwards: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        call = self.stub.Subscribe(
            request(*SETTING_KEYS, STORE_KEY), metadata=[("authorization", f"Bearer {self.token}")]
        )
        async for message in call:
            for key, data in message.data.items():
                held = self.latest.get(key)
                if held is not None and data.revision < held[1]:
                    self.backwards.append(f"{key}: {held[1]} -> {data.revision}")
                self.latest[key] = (data.value, data.revision)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Wait for ``predicate`` (a plain or a database-reading one) to hold; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, f"{what} not reached within {timeout:.0f}s"
        await asyncio.sleep(0.02)


def _now(check: Callable[[], bool]) -> Callable[[], Any]:
    async def holds() -> bool:
        return check()

    return holds


@pytest.mark.timeout(600)
async def test_write_path__admin_rest_grpc_and_a_store_watcher_on_the_same_keys__one_unbroken_history(http_port):
    token = await sync_to_async(_setup)()
    stores = {**settings.DATASTREAM, "STORES": STORES}
    async with serving(DATASTREAM=stores) as (service, stub):
        MemoryStore.source("mem").set(STORE_KEY, "int", b"1")
        await _until(sync_to_async(lambda: current(STORE_KEY) == b"1"), "the store key listed")
        deadlocks_before = await sync_to_async(_deadlocks)()
        subscribers = [Subscriber(stub, token) for _ in range(3)]
        for subscriber in subscribers:
            subscriber.start()
        out = Outcomes()
        # Disjoint value ranges: each history row names the one writer that wrote it.
        writing = asyncio.gather(
            asyncio.to_thread(_admin_writer, http_port, itertools.count(1_000_000), out),
            asyncio.to_thread(_rest_writer, http_port, token, itertools.count(2_000_000), out),
            asyncio.to_thread(_grpc_writer, service.port, token, itertools.count(3_000_000), out),
            asyncio.to_thread(_outside_writer, itertools.count(4_000_000)),
        )
        # A subscriber joining while the writes run starts from a snapshot taken mid-way.
        late = Subscriber(stub, token)
        await _until(_now(lambda: len(out.acknowledged.get("rate_limit", [])) >= 5), "some writes done")
        late.start()
        subscribers.append(late)
        await asyncio.gather(writing)

        assert out.failures == []
        deadlocks_after = await sync_to_async(_deadlocks)()
        assert deadlocks_after == deadlocks_before

        # The watcher catches up with the source's last value; then every subscriber ends equal to Sync.
        last_outside = MemoryStore.source("mem").items[STORE_KEY][1]
        await _until(
            sync_to_async(lambda: current(STORE_KEY) == last_outside), "the watcher applying the last outside change"
        )
        synced = await stub.Sync(
            request(*SETTING_KEYS, STORE_KEY), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
        final = {key: (data.value, data.revision) for key, data in synced.data.items()}
        for number, subscriber in enumerate(subscribers):
            await _until(_now(lambda s=subscriber: s.latest == final), f"subscriber {number} equal to Sync")
            subscriber.stop()
            assert subscriber.backwards == []

    def check() -> None:
        for key in (*SETTING_KEYS, STORE_KEY):
            initial = b"1" if key == STORE_KEY else {"max_connections": b"10", "rate_limit": b"1000"}[key]
            _check_history(key, out.acknowledged.get(key, []), initial)
            last = SettingChange.objects.filter(key=key).order_by("-revision").first()
            assert last is not None
            assert (bytes(last.new_value), last.revision) == final[key]
        # Admin, REST and gRPC each wrote every setting key ROUNDS times, and none failed.
        assert all(len(out.acknowledged[key]) == 3 * ROUNDS for key in SETTING_KEYS)

    await sync_to_async(check)()


def current(key: str) -> bytes | None:
    row = MirroredEntry.objects.filter(key=key).first()
    return None if row is None else bytes(row.value)
