"""The contract against the SQL table store on SQLite and on a real PostgreSQL, plus its own behaviour.

Other programs are played by plain sqlite3 / psycopg connections of the test's
own, writing the table exactly as any program would. The PostgreSQL server is
started for this module (tests/servers.py); without the binaries the tests
skip, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings

from datastream_app import services
from datastream_app.exceptions import Aborted, InvalidValue, Unavailable
from datastream_app.models import MirroredEntry, Setting, SettingChange, StoreStatus
from datastream_app.stores import get_stores
from datastream_app.stores.sql import TRIGGER_NAME, SQLStore
from tests.conftest import serving as serving_grpc
from tests.servers import BinaryNotFound, PostgresServer, free_port, skip_unless_installed
from tests.stores.contract import *  # noqa: F403 - the contract's tests run here
from tests.stores.contract import Harness, Sample, wire
from tests.stores.mirrored_contract import *  # noqa: F403 - and the external stores' contract

pytestmark = pytest.mark.django_db(transaction=True)

ALIAS = "sql"
PREFIX = "sql/"
BACKEND = "datastream_app.stores.sql.SQLStore"
MODEL_STORE = {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": ""}
SAMPLES = {
    "sql/max_connections": Sample("int", b"10", b"25", b"ten"),
    "sql/flags.json": Sample("json", b'{"a":1}', b'{"a":2}', b"{"),
    "sql/motd": Sample("string", b"hello", b"bye"),
    "sql/blob": Sample("bytes", b"\x00\x01", b"\x02"),
}
COLUMNS = ("key", "value", "value_type", "updated_at")


class Database(ABC):
    """The database holding the table, as another program sees it: plain SQL on connections of its own."""

    engine: str
    url: str
    # Column definitions of the original service's schema, by role.
    types: dict[str, str]

    @abstractmethod
    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``%s`` placeholders) in its own committed transaction."""

    @abstractmethod
    def begin_update(self, key: str, value: bytes) -> Callable[[], None]:
        """Update a row in a transaction left open; return its commit."""

    @abstractmethod
    def go_down(self) -> None:
        """Make the database unreachable for the store."""

    @abstractmethod
    def come_back(self) -> None:
        """Undo go_down()."""

    @property
    @abstractmethod
    def down(self) -> bool:
        """Whether go_down() is in effect."""

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The database unreachable for the store inside the block."""
        self.go_down()
        try:
            yield
        finally:
            self.come_back()

    def options(self, **extra: Any) -> dict[str, Any]:
        """OPTIONS for a store on this database."""
        return {"url": self.url, **extra}

    def config(self, **extra: Any) -> dict[str, Any]:
        """A DATASTREAM["STORES"] entry for a store on this database."""
        return {"BACKEND": BACKEND, "PREFIX": PREFIX, "OPTIONS": self.options(**extra)}

    def create_table(
        self,
        table: str = "datastream",
        *,
        names: dict[str, str] | None = None,
        value_type: str | None = None,
        omit: tuple[str, ...] = (),
    ) -> None:
        """Create the table as the original service did: ``names`` renames columns, ``omit`` leaves some out."""
        names = names or {}
        types = dict(self.types, **({"value": value_type} if value_type else {}))
        columns = ", ".join(f"{names.get(role, role)} {types[role]}" for role in COLUMNS if role not in omit)
        self.execute(f"CREATE TABLE {table} ({columns})")

    def upsert(self, key: str, value_type: str, value: bytes | str) -> None:
        """Insert or change a row, as another program would."""
        self.execute(
            "INSERT INTO datastream (key, value, value_type, updated_at) VALUES (%s, %s, %s, CURRENT_TIMESTAMP) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, value_type = excluded.value_type, "
            "updated_at = excluded.updated_at",
            (key, value, value_type),
        )

    def delete(self, key: str) -> None:
        """Delete a row, as another program would."""
        self.execute("DELETE FROM datastream WHERE key = %s", (key,))

    def value(self, key: str) -> Any:
        """The value column of a row, as the driver returns it."""
        rows = self.execute("SELECT value FROM datastream WHERE key = %s", (key,))
        return rows[0][0] if rows else None


class SQLiteDatabase(Database):
    """A SQLite file under the test's tmp_path."""

    engine = "sqlite"
    types = {
        "key": "TEXT PRIMARY KEY",
        "value": "BLOB NOT NULL",
        "value_type": "TEXT NOT NULL",
        "updated_at": "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP",
    }

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.away = path.with_name(path.name + ".away")
        sqlite3.connect(path).close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(self._connect()) as conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()

    def begin_update(self, key: str, value: bytes) -> Callable[[], None]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE datastream SET value = ?, updated_at = CURRENT_TIMESTAMP WHERE key = ?", (value, key))

        def commit() -> None:
            conn.execute("COMMIT")
            conn.close()

        return commit

    def go_down(self) -> None:
        # Root reads a file whatever its mode, so "unreadable" means moved away.
        self.path.rename(self.away)

    def come_back(self) -> None:
        self.away.rename(self.path)

    @property
    def down(self) -> bool:
        return self.away.exists()


class PostgresDatabase(Database):
    """The ``datastream`` database of the module's PostgreSQL server, emptied per test."""

    engine = "postgres"
    types = {
        "key": "text PRIMARY KEY",
        "value": "bytea NOT NULL",
        "value_type": "text NOT NULL",
        "updated_at": "timestamptz NOT NULL DEFAULT now()",
    }

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.url = server.url
        self.execute("DROP SCHEMA public CASCADE")
        self.execute("CREATE SCHEMA public")

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def begin_update(self, key: str, value: bytes) -> Callable[[], None]:
        conn = psycopg.connect(self.url)
        conn.execute("UPDATE datastream SET value = %s, updated_at = now() WHERE key = %s", (value, key))

        def commit() -> None:
            conn.commit()
            conn.close()

        return commit

    def go_down(self) -> None:
        self.server.stop()

    def come_back(self) -> None:
        self.server.start()

    @property
    def down(self) -> bool:
        return not self.server.running


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the module; tests that stop it start it again."""
    try:
        server = PostgresServer()
    except BinaryNotFound as exc:
        skip_unless_installed(exc)
    with server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The table's database, on each engine."""
    if request.param == "sqlite":
        return SQLiteDatabase(tmp_path / "settings.sqlite3")
    return PostgresDatabase(request.getfixturevalue("postgres_server"))


def seed(db: Database) -> None:
    """The original schema holding SAMPLES (table keys without the prefix)."""
    db.create_table()
    for key, sample in SAMPLES.items():
        db.upsert(key.removeprefix(PREFIX), sample.value_type, sample.initial)


@pytest.fixture
def harness(db: Database) -> Iterator[Harness]:
    seed(db)
    store = SQLStore(alias=ALIAS, prefix=PREFIX, **db.options(poll_interval=0.2))
    store.refresh()

    def outside_write(key: str, value_type: str, value: bytes) -> None:
        db.upsert(key.removeprefix(PREFIX), value_type, value)

    yield Harness(store=store, samples=SAMPLES, outside_write=outside_write, config=db.config(poll_interval=0.2),
                  notice=store.refresh)  # fmt: skip
    store.close()


@contextlib.contextmanager
def serving(db: Database, **options: Any) -> Iterator[None]:
    """The model store at "" and the SQL store at "sql/" configured; the SQL stores built meanwhile closed after."""
    with override_settings(DATASTREAM={"STORES": {"default": MODEL_STORE, ALIAS: db.config(**options)}}):
        try:
            yield
        finally:
            # Building stores that failed to build fails again: nothing to close then.
            with contextlib.suppress(ImproperlyConfigured):
                for store in get_stores():
                    if isinstance(store, SQLStore):
                        store.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Await ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def checked_at() -> Any:
    return StoreStatus.objects.get(alias=ALIAS).checked_at


# Change detection


async def test_sql_watch__another_program_writes__subscriber_gets_it_well_before_the_poll(db, harness):
    from protos import datastream_pb2

    key = "sql/motd"
    # A 30 s poll: delivery within seconds can only come from NOTIFY / data_version.
    with serving(db, poll_interval=30.0):
        if db.engine == "postgres":
            await sync_to_async(call_command, thread_sensitive=False)("installsqltrigger", ALIAS, stdout=io.StringIO())
        before = await sync_to_async(checked_at)()
        async with serving_grpc() as (_, stub):
            # The watcher's first listing; after it, the next poll is 30 s away.
            await eventually(lambda: sync_to_async(lambda: checked_at() != before)())
            call = stub.Subscribe(datastream_pb2.DataRequest(keys=[key]))
            first = await asyncio.wait_for(call.read(), 10)
            started = time.monotonic()
            await sync_to_async(db.upsert, thread_sensitive=False)("motd", "string", b"from another program")
            update = await asyncio.wait_for(call.read(), 10)
            elapsed = time.monotonic() - started
            call.cancel()

    assert first.data[key].value == b"hello"
    assert update.data[key].value == b"from another program"
    assert elapsed < 5.0


def waiting(store: SQLStore, timeout: float, events: list[str]) -> threading.Thread:
    """A started thread running ``store.wait(timeout)`` (appending "returned" to ``events``), once it blocks."""

    def wait() -> None:
        store.wait(timeout)
        events.append("returned")

    waiter = threading.Thread(target=wait)
    waiter.start()
    # wait() holds the engine's wait lock while it blocks.
    deadline = time.monotonic() + 30
    while not store.engine.wait_lock.locked() and not events:
        assert time.monotonic() < deadline, "wait() never started"
        time.sleep(0.01)
    return waiter


def test_sql_wait__another_program_commits__returns_early(db, harness):
    store = harness.store
    if db.engine == "postgres":
        store.install_trigger()
    store.refresh()
    events: list[str] = []
    # An hour: a wait() that returns during this test returned for the commit.
    waiter = waiting(store, 3600.0, events)

    # Logged before the commit: the wait may return as soon as the commit lands.
    events.append("committing")
    db.upsert("motd", "string", b"changed")
    waiter.join(30.0)

    assert events == ["committing", "returned"]
    assert store.refresh() == 1


def test_sql_wait__nothing_changes__returns_at_the_timeout(db, harness):
    harness.store.refresh()
    started = time.monotonic()

    harness.store.wait(0.8)

    assert 0.7 <= time.monotonic() - started < 5.0


def test_sql_close__while_a_wait_blocks__wait_returns(db, harness):
    store = harness.store
    store.refresh()
    events: list[str] = []
    waiter = waiting(store, 3600.0, events)

    events.append("closing")
    store.close()
    waiter.join(30.0)

    assert events == ["closing", "returned"]
    store.refresh()  # usable again: it reconnects


def test_sql_wait__database_down_then_back__returns_at_each_transition(db, harness):
    store = harness.store
    store.refresh()
    db.go_down()
    back = threading.Timer(0.5, db.come_back)
    try:
        started = time.monotonic()
        store.wait(30.0)
        noticed_down = time.monotonic() - started
        with pytest.raises(Unavailable):
            store.refresh()

        back.start()
        started = time.monotonic()
        store.wait(30.0)
        noticed_back = time.monotonic() - started
    finally:
        back.cancel()
        if back.is_alive():
            back.join()
        if db.down:
            db.come_back()

    assert noticed_down < 3.0
    assert noticed_back < 8.0
    store.refresh()


def test_sql_refresh__row_deleted_by_another_program__gone_with_a_delete_record(db, harness):
    db.delete("blob")

    harness.store.refresh()

    assert "sql/blob" not in harness.store.get_many(None)
    assert SettingChange.objects.filter(key="sql/blob", action="delete", store=ALIAS).exists()


def test_sql_refresh__unchanged_table__no_new_revision(db, harness):
    revision = harness.store.current_revision()

    assert harness.store.refresh() == 0
    assert harness.store.current_revision() == revision


# Writes


def test_sql_put__row_changed_by_another_program__aborted_and_nothing_changed(db, harness):
    db.upsert("motd", "string", b"changed elsewhere")

    with pytest.raises(Aborted, match="sql/motd"):
        harness.store.put("sql/motd", value_type="string", decode=wire(b"mine"))

    assert bytes(db.value("motd")) == b"changed elsewhere"
    assert harness.store.get_many(["sql/motd"])["sql/motd"].value == b"hello"


def lock_waits(db: Database) -> list[tuple[str, str]]:
    """(waiting statement, statement of the session it waits for) of every session waiting on a lock now."""
    return [
        (str(waiting), str(blocking))
        for waiting, blocking in db.execute(
            "SELECT waiting.query, blocking.query FROM pg_stat_activity waiting "
            "JOIN pg_stat_activity blocking ON blocking.pid = ANY(pg_blocking_pids(waiting.pid)) "
            "WHERE waiting.wait_event_type = 'Lock' AND waiting.datname = current_database()"
        )
    ]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_sql_write_postgres__another_transaction_holds_the_row__waits_for_its_commit_then_aborted(db, harness):
    store = harness.store
    etag = MirroredEntry.objects.get(key="sql/motd").etag
    commit_theirs = db.begin_update("motd", b"theirs")
    events: list[str] = []
    outcome: dict[str, BaseException] = {}

    def write_mine() -> None:
        try:
            store.write("sql/motd", b"mine", "string", etag)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            events.append("mine returned")

    mine = threading.Thread(target=write_mine)
    mine.start()
    # Seen by the server: the store's read of the row waits for their open UPDATE.
    deadline = time.monotonic() + 30
    while not any("FOR UPDATE" in w and b.startswith("UPDATE datastream") for w, b in lock_waits(db)):
        assert not events, f"the write returned without waiting for their lock: {outcome}"
        assert time.monotonic() < deadline, "the write never waited for their lock"
        time.sleep(0.02)
    events.append("mine waits for their lock")
    events.append("theirs commits")  # before commit(): mine cannot return until it is done
    commit_theirs()
    mine.join(30.0)

    assert events == ["mine waits for their lock", "theirs commits", "mine returned"]
    assert isinstance(outcome.get("error"), Aborted)
    assert bytes(db.value("motd")) == b"theirs"
    assert store.get_many(["sql/motd"])["sql/motd"].value == b"hello"


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_sql_write_sqlite__another_transaction_holds_the_write_lock__busy_before_reading_then_aborted(
    db, harness, monkeypatch
):
    store = harness.store
    etag = MirroredEntry.objects.get(key="sql/motd").etag
    # Every statement the store runs, as SQLite starts it.
    statements: list[str] = []
    connect = store.engine.connect

    def traced() -> sqlite3.Connection:
        conn = connect()
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(store.engine, "connect", traced)
    # No busy timeout: the write reports SQLite's busy state at once instead of waiting in it.
    monkeypatch.setattr(store, "timeout", 0.0)
    commit_theirs = db.begin_update("motd", b"theirs")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.write("sql/motd", b"mine", "string", etag)
    run_under_their_lock = list(statements)
    commit_theirs()
    with pytest.raises(Aborted):
        store.write("sql/motd", b"mine", "string", etag)

    # It stopped at the write lock before reading the row it compares.
    assert run_under_their_lock
    assert not [s for s in run_under_their_lock if "SELECT" in s.upper()]
    assert [s for s in statements if "SELECT" in s.upper()]
    assert bytes(db.value("motd")) == b"theirs"
    assert store.get_many(["sql/motd"])["sql/motd"].value == b"hello"


def test_sql_put__row_deleted_by_another_program__aborted(db, harness):
    db.delete("motd")

    with pytest.raises(Aborted, match="deleted"):
        harness.store.put("sql/motd", value_type="string", decode=wire(b"mine"))


def test_sql_put__text_value_column__text_written_and_non_utf8_bytes_refused(db):
    db.create_table(value_type="TEXT NOT NULL" if db.engine == "sqlite" else "text NOT NULL")
    db.upsert("motd", "string", "hello")
    db.upsert("blob", "bytes", "ab")
    store = SQLStore(alias=ALIAS, prefix=PREFIX, **db.options())
    try:
        store.refresh()

        store.put("sql/motd", value_type="string", decode=wire(b"bye"))
        with pytest.raises(InvalidValue, match="not UTF-8"):
            store.put("sql/blob", value_type="bytes", decode=wire(b"\xff\xfe"))
    finally:
        store.close()

    assert db.value("motd") == "bye"
    assert db.value("blob") == "ab"


def test_sql_put__through_the_store__updated_at_moves_and_refresh_sees_no_change(db, harness):
    before = db.execute("SELECT updated_at FROM datastream WHERE key = %s", ("motd",))[0][0]
    time.sleep(0.01)

    harness.store.put("sql/motd", value_type="string", decode=wire(b"bye"))

    after = db.execute("SELECT updated_at FROM datastream WHERE key = %s", ("motd",))[0][0]
    assert after != before
    assert harness.store.refresh() == 0


# Configuration


def test_sql_init__missing_table__improperly_configured_naming_it(db):
    db.create_table("something_else")

    with pytest.raises(ImproperlyConfigured, match=r"table 'datastream' does not exist"):
        SQLStore(alias=ALIAS, prefix=PREFIX, **db.options())


def test_sql_init__missing_column__improperly_configured_naming_it(db):
    db.create_table(omit=("updated_at",))

    with pytest.raises(ImproperlyConfigured, match=r"table 'datastream' has no column 'updated_at'"):
        SQLStore(alias=ALIAS, prefix=PREFIX, **db.options())


def test_sql_service__missing_column__refuses_to_start(db):
    from datastream_app.rpc.server import GrpcService

    db.create_table(omit=("value_type",))

    with serving(db), pytest.raises(ImproperlyConfigured, match="value_type"):
        GrpcService("127.0.0.1:0")


def test_sql_init__other_column_names_and_table__served(db):
    names = {"key": "name", "value": "data", "value_type": "kind", "updated_at": "changed"}
    db.create_table("app_settings", names=names)
    db.execute(
        "INSERT INTO app_settings (name, data, kind, changed) VALUES (%s, %s, %s, CURRENT_TIMESTAMP)",
        ("retries", b"3", "int"),
    )
    store = SQLStore(
        alias=ALIAS,
        prefix=PREFIX,
        **db.options(
            table="app_settings", key_column="name", value_column="data", value_type_column="kind",
            updated_at_column="changed",
        ),
    )  # fmt: skip
    try:
        store.refresh()
        entry = store.put("sql/retries", value_type="int", decode=wire(b"4"))
    finally:
        store.close()

    assert entry.value == b"4"
    assert bytes(db.execute("SELECT data FROM app_settings WHERE name = %s", ("retries",))[0][0]) == b"4"


def test_sql_init__unknown_option__improperly_configured_naming_it(db):
    seed(db)

    with pytest.raises(ImproperlyConfigured, match="pol_interval"):
        SQLStore(alias=ALIAS, prefix=PREFIX, **db.options(pol_interval=1))


def test_sql_init__database_unreachable__starts_and_its_keys_are_unavailable(db, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'missing.sqlite3'}"
        if db.engine == "sqlite"
        else f"postgres://x@127.0.0.1:{free_port()}/x"
    )
    store = SQLStore(alias=ALIAS, prefix=PREFIX, url=url, timeout=2)

    with pytest.raises(Unavailable, match="'sql'"):
        store.refresh()
    with pytest.raises(Unavailable):
        store.get_many(None)
    store.close()


def test_sql_init__postgres_password__not_in_messages():
    url = f"postgres://someone:hunter2@127.0.0.1:{free_port()}/x"
    store = SQLStore(alias=ALIAS, prefix=PREFIX, url=url, timeout=2)

    with pytest.raises(Unavailable) as caught:
        store.refresh()

    assert "hunter2" not in caught.value.message
    assert "hunter2" not in store.describe()


# Failure isolation


def test_sql_refresh__database_down__only_its_keys_unavailable_then_a_refresh_catches_up(db, harness):
    Setting.objects.create(key="max_connections", value_type="int", value=b"10")
    with serving(db):
        assert services.get_entries(keys=["sql/motd"])["sql/motd"].value == b"hello"
        with db.outage():
            with pytest.raises(Unavailable, match="'sql'"):
                harness.store.refresh()
            with pytest.raises(Unavailable, match="'sql'"):
                services.get_entries(keys=["sql/motd"])
            assert services.get_entries(keys=["max_connections"])["max_connections"].value == b"10"
        db.upsert("motd", "string", b"while away")

        harness.store.refresh()

        assert services.get_entries(keys=["sql/motd"])["sql/motd"].value == b"while away"
        assert services.get_entries(keys=["max_connections"])["max_connections"].value == b"10"


def test_sql_put__database_down__unavailable_and_copy_unchanged(db, harness):
    with db.outage(), pytest.raises(Unavailable, match="'sql'"):
        harness.store.put("sql/motd", value_type="string", decode=wire(b"mine"))

    harness.store.refresh()
    assert harness.store.get_many(["sql/motd"])["sql/motd"].value == b"hello"
    assert bytes(db.value("motd")) == b"hello"


# installsqltrigger


def _triggers(db: Database) -> list[str]:
    rows = db.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'datastream'::regclass AND NOT tgisinternal ORDER BY tgname"
    )
    return [name for (name,) in rows]


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Database:
    """The table's database on PostgreSQL only (triggers do not exist for SQLite stores)."""
    return PostgresDatabase(postgres_server)


def test_installsqltrigger__run_twice__one_trigger_that_notifies_the_channel(pg):
    seed(pg)
    out = io.StringIO()
    with serving(pg):
        call_command("installsqltrigger", ALIAS, stdout=out)
        call_command("installsqltrigger", ALIAS, stdout=out)

    assert _triggers(pg) == [TRIGGER_NAME, TRIGGER_NAME + "_truncate"]
    assert "datastream_changed" in out.getvalue()
    with psycopg.connect(pg.url, autocommit=True) as listener:
        listener.execute('LISTEN "datastream_changed"')
        pg.upsert("motd", "string", b"x")
        pg.execute("TRUNCATE datastream")
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    assert payloads == ["motd", ""]


def test_installsqltrigger__print__sql_shown_and_nothing_installed(pg):
    seed(pg)
    out = io.StringIO()
    with serving(pg):
        call_command("installsqltrigger", ALIAS, "--print", stdout=out)

    assert "CREATE TRIGGER" in out.getvalue()
    assert "pg_notify('datastream_changed'" in out.getvalue()
    assert _triggers(pg) == []


def test_installsqltrigger__drop__trigger_removed(pg):
    seed(pg)
    with serving(pg):
        call_command("installsqltrigger", ALIAS, stdout=io.StringIO())
        call_command("installsqltrigger", ALIAS, "--drop", stdout=io.StringIO())

    assert _triggers(pg) == []


def test_installsqltrigger__sqlite_store__says_no_trigger_is_needed(tmp_path):
    db = SQLiteDatabase(tmp_path / "settings.sqlite3")
    seed(db)
    out = io.StringIO()
    with serving(db):
        call_command("installsqltrigger", ALIAS, stdout=out)

    assert "no trigger needed" in out.getvalue()


def test_installsqltrigger__unknown_alias__command_error(tmp_path):
    db = SQLiteDatabase(tmp_path / "settings.sqlite3")
    with serving(db), pytest.raises(CommandError, match="no store 'nope'"):
        call_command("installsqltrigger", "nope")


def test_installsqltrigger__not_a_sql_store__command_error(tmp_path):
    db = SQLiteDatabase(tmp_path / "settings.sqlite3")
    with serving(db), pytest.raises(CommandError, match="not a SQL store"):
        call_command("installsqltrigger", "default")
