"""The SQL table store: serves an existing key/value table that other programs write, on SQLite or PostgreSQL.

The table is the original service's schema: ``key`` (text, primary key),
``value`` (bytes or text: the wire form), ``value_type`` (text) and
``updated_at`` (timestamp). A table key ``max_connections`` is served as
``PREFIX + "max_connections"``. Every listing reads the whole table, which is
meant for settings-sized tables (thousands of rows, not millions).

Changes are noticed at once: on PostgreSQL through LISTEN/NOTIFY from the
trigger ``manage.py installsqltrigger <alias>`` installs (with a slow poll as a
safety net), on SQLite by watching ``PRAGMA data_version`` a few times a second.
Writes are compare-and-set on a hash of the row, inside one transaction that
locks the row, so a writer that lost a race changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
from django.core.exceptions import ImproperlyConfigured
from psycopg import sql
from psycopg.rows import TupleRow

from datastream_app.exceptions import Aborted, InvalidValue
from datastream_app.stores.base import reject_unknown_options
from datastream_app.stores.mirrored import MirroredStore, Snapshot

logger = logging.getLogger(__name__)

PgConnection = psycopg.Connection[TupleRow]
# (key, value, value_type, updated_at) as the driver returns them.
Row = tuple[Any, ...]

# Poll intervals when OPTIONS give none: SQLite has only polling; on PostgreSQL
# NOTIFY carries changes and the poll is a safety net (a missing trigger, a lost notification).
SQLITE_POLL_INTERVAL = 5.0
POSTGRES_POLL_INTERVAL = 30.0
# How often wait() looks at PRAGMA data_version: the latency of a change on SQLite.
SQLITE_CHECK_INTERVAL = 0.25
# wait() blocks in slices this long so close() can stop it within a slice.
WAIT_SLICE = 0.5
# While the database is down, wait() tries to LISTEN again this often.
RECONNECT_INTERVAL = 2.0
# Longest key a trigger puts in a NOTIFY payload; PostgreSQL refuses payloads of 8000 bytes or more.
NOTIFY_PAYLOAD_CHARS = 1000
TRIGGER_NAME = "datastream_notify"
CHANNEL_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Declared SQLite column types that give the column text affinity (SQLite's own rule).
SQLITE_TEXT_AFFINITY = ("CHAR", "CLOB", "TEXT")


@dataclass(frozen=True, slots=True)
class Columns:
    """Names of the four columns the store reads and writes."""

    key: str = "key"
    value: str = "value"
    value_type: str = "value_type"
    updated_at: str = "updated_at"

    def names(self) -> list[str]:
        """The column names in row order."""
        return [self.key, self.value, self.value_type, self.updated_at]


def _stamp(value: Any) -> str:
    # The same instant must always give the same text: an aware timestamp
    # would otherwise print in whatever time zone the session uses.
    if isinstance(value, datetime):
        moment: datetime = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.isoformat()
    return "" if value is None else str(value)


def _as_bytes(value: Any) -> bytes:
    # A value column may be BLOB/bytea, text, or (SQLite) hold a number.
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


def _as_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def etag_of(value_type: str, value: bytes, updated_at: Any) -> str:
    """The version marker of a row: a hash of its type, value and timestamp."""
    digest = hashlib.sha256()
    for part in (value_type.encode("utf-8"), value, _stamp(updated_at).encode("utf-8")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def snapshot_of(row: Row) -> Snapshot:
    """A table row as the mirrored base wants it."""
    _, value, value_type, updated_at = row
    value_type_text = _as_text(value_type)
    raw = _as_bytes(value)
    return Snapshot(value_type_text, raw, etag_of(value_type_text, raw, updated_at))


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Engine(ABC):
    """What differs between SQLite and PostgreSQL: connecting, locking, change detection."""

    name = "sql"

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        # Set by close() so a blocked wait() returns within a slice.
        self.closing = threading.Event()
        # Held for the whole of a wait(): close() takes it to know no wait() still uses a connection.
        self.wait_lock = threading.Lock()
        # Whether the value column stores bytes (BLOB, bytea) or text; None until the schema was read.
        self.binary_value: bool | None = None

    @abstractmethod
    def describe(self) -> str:
        """Where the table lives, without secrets."""

    @abstractmethod
    def start(self) -> None:
        """Check the table and its columns; raise ImproperlyConfigured if they are wrong."""

    @abstractmethod
    def rows(self) -> list[Row]:
        """Every row of the table."""

    @abstractmethod
    def update(self, table_key: str, value: bytes | str, value_type: str, expected_etag: str) -> Row:
        """Compare-and-set one row in one transaction; raise Aborted if it moved on."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Block until the table may have changed or ``timeout`` passes."""

    @abstractmethod
    def close_connections(self) -> None:
        """Close every connection the engine holds."""

    def close(self) -> None:
        """Stop a running wait(), then close the connections; the engine reconnects when used again."""
        self.closing.set()
        # A wait() notices ``closing`` within a slice; after this no thread uses the connections.
        acquired = self.wait_lock.acquire(timeout=5 * WAIT_SLICE + 5)
        try:
            self.close_connections()
        finally:
            self.closing.clear()
            if acquired:
                self.wait_lock.release()

    def check_columns(self, present: dict[str, str]) -> None:
        """Raise ImproperlyConfigured unless all four columns are in ``present`` (name -> declared type)."""
        store = self.store
        if not present:
            raise ImproperlyConfigured(
                f"store {store.alias!r}: table {store.table!r} does not exist in {self.describe()}"
            )
        missing = [name for name in store.columns.names() if name not in present]
        if missing:
            raise ImproperlyConfigured(
                f"store {store.alias!r}: table {store.table!r} has no column "
                f"{', '.join(repr(m) for m in missing)} (its columns: {', '.join(sorted(present))}); "
                "set the column names in OPTIONS if they differ"
            )

    def aborted(self, table_key: str, gone: bool) -> Aborted:
        """The error for a conditional write that lost."""
        key = self.store.prefix + table_key
        what = "was deleted from" if gone else "changed in"
        return Aborted(f"key {key!r} {what} store {self.store.alias!r} meanwhile; read it again and retry")


class _SQLite(_Engine):
    """A SQLite file: a fresh connection per listing and write, PRAGMA data_version for changes."""

    name = "sqlite"

    def __init__(self, store: SQLStore, path: str) -> None:
        super().__init__(store)
        self.path = path
        self.table = ".".join(_quote_sqlite(part) for part in store.table_parts)
        self.schema, self.bare_table = (
            store.table_parts if len(store.table_parts) == 2 else ("main", store.table_parts[0])
        )
        # A connection kept open only to read data_version, which moves when another connection commits.
        self.watch_lock = threading.Lock()
        self.watch: sqlite3.Connection | None = None
        self.watch_file: tuple[int, int] | None = None
        # What wait() last saw: (file identity, data_version), None if unreadable.
        self.seen: tuple[tuple[int, int], int] | None = None

    def describe(self) -> str:
        """The file path."""
        return f"SQLite file {self.path}"

    def connect(self) -> sqlite3.Connection:
        """A new connection; mode=rw, so a missing file fails instead of becoming a new empty database."""
        return sqlite3.connect(
            f"file:{quote(self.path)}?mode=rw",
            uri=True,
            timeout=self.store.timeout,
            isolation_level=None,  # autocommit; transactions are explicit BEGINs
            check_same_thread=False,
        )

    def start(self) -> None:
        """The table and its columns must exist; a missing file only makes the keys unavailable for now."""
        if not os.path.exists(self.path):
            # As a PostgreSQL server that does not answer: refusing to start would
            # take every other store down with this file (being replaced, say).
            logger.warning(
                "store %s: %s does not exist; its keys are unavailable until it does",
                self.store.alias,
                self.describe(),
            )
            return
        with contextlib.closing(self.connect()) as conn:
            present = {
                str(name): str(declared or "")
                for name, declared in conn.execute(
                    "SELECT name, type FROM pragma_table_info(?, ?)", (self.bare_table, self.schema)
                )
            }
        self.check_columns(present)
        declared = present[self.store.columns.value].upper()
        # Text affinity: other programs read text there, so write text. BLOB or no type: bytes.
        self.binary_value = not any(word in declared for word in SQLITE_TEXT_AFFINITY)
        self.seen = self.probe()

    def select(self) -> str:
        """The statement listing the four columns."""
        columns = ", ".join(_quote_sqlite(name) for name in self.store.columns.names())
        return f"SELECT {columns} FROM {self.table}"  # noqa: S608 - identifiers are quoted

    def rows(self) -> list[Row]:
        """Read the whole table on a fresh connection, so a removed or replaced file is noticed."""
        # Mark the version first: a commit after this point wakes the next wait().
        self.seen = self.probe()
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.describe()} does not exist")
        if self.binary_value is None:
            self.start()  # the file appeared after startup: check its schema now
        with contextlib.closing(self.connect()) as conn:
            return [tuple(row) for row in conn.execute(self.select())]

    def update(self, table_key: str, value: bytes | str, value_type: str, expected_etag: str) -> Row:
        """BEGIN IMMEDIATE takes the write lock, so nobody commits between the check and the UPDATE."""
        columns = self.store.columns
        key_col = _quote_sqlite(columns.key)
        where = f" WHERE {key_col} = ?"
        with contextlib.closing(self.connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = conn.execute(self.select() + where, (table_key,)).fetchone()
                if current is None or snapshot_of(current).etag != expected_etag:
                    raise self.aborted(table_key, gone=current is None)
                conn.execute(
                    f"UPDATE {self.table} SET {_quote_sqlite(columns.value)} = ?, "  # noqa: S608 - quoted identifiers
                    f"{_quote_sqlite(columns.value_type)} = ?, "
                    # The format of CURRENT_TIMESTAMP with milliseconds, in UTC.
                    f"{_quote_sqlite(columns.updated_at)} = strftime('%Y-%m-%d %H:%M:%f', 'now')" + where,
                    (value, value_type, table_key),
                )
                row = conn.execute(self.select() + where, (table_key,)).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return tuple(row)

    def probe(self) -> tuple[tuple[int, int], int] | None:
        """(file identity, data_version) now, or None if the file cannot be read."""
        with self.watch_lock:
            try:
                stat = os.stat(self.path)
            except OSError:
                self._close_watch()
                return None
            identity = (stat.st_dev, stat.st_ino)
            try:
                if self.watch is None or self.watch_file != identity:
                    # A replaced file is a new database: an old connection would watch the old inode.
                    self._close_watch()
                    self.watch, self.watch_file = self.connect(), identity
                version = self.watch.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                self._close_watch()
                return None
            return identity, int(version)

    def wait(self, timeout: float) -> None:
        """Return as soon as another connection committed, the file changed, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self.wait_lock:
            while not self.closing.is_set():
                now = self.probe()
                if now != self.seen:
                    # Remember it, so a process that does not hold the lease (and does
                    # not list) is woken once per change, not in a loop.
                    self.seen = now
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.closing.wait(min(remaining, SQLITE_CHECK_INTERVAL))

    def _close_watch(self) -> None:
        if self.watch is not None:
            with contextlib.suppress(sqlite3.Error):
                self.watch.close()
        self.watch, self.watch_file = None, None

    def close_connections(self) -> None:
        """Close the data_version connection."""
        with self.watch_lock:
            self._close_watch()


class _Postgres(_Engine):
    """A PostgreSQL table: one connection for queries, one that LISTENs."""

    name = "postgresql"

    def __init__(self, store: SQLStore, url: str) -> None:
        super().__init__(store)
        self.url = url
        self.table = sql.Identifier(*store.table_parts)
        self.query_lock = threading.Lock()
        self.conn: PgConnection | None = None
        self.listen_lock = threading.Lock()
        self.listener: PgConnection | None = None

    def describe(self) -> str:
        """The database URL without its password."""
        return f"PostgreSQL database {redact(self.url)}"

    def _connect(self) -> PgConnection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=max(2, round(self.store.timeout)))

    def start(self) -> None:
        """Check the schema now if the server answers; if it does not, the first listing checks it."""
        try:
            with self.query_lock:
                self.connection()
            installed = self.trigger_installed()
        except psycopg.OperationalError as exc:
            # Refusing to start would make every other store depend on this
            # database being up; its keys are UNAVAILABLE until it answers.
            logger.warning(
                "store %s: %s cannot be reached (%s); its keys are unavailable until it can",
                self.store.alias,
                self.describe(),
                str(exc).strip(),
            )
            return
        if not installed:
            logger.warning(
                "store %s: table %s has no %s trigger: changes arrive only every %.0fs; "
                "run `manage.py installsqltrigger %s`",
                self.store.alias,
                self.store.table,
                TRIGGER_NAME,
                self.store.poll_interval,
                self.store.alias,
            )

    def connection(self) -> PgConnection:
        """The query connection, checked with a round trip and replaced if the server dropped it.

        Call with ``query_lock`` held. A new connection has its schema checked.
        """
        if self.conn is not None:
            try:
                self.conn.execute("SELECT 1")
                return self.conn
            except psycopg.Error:
                # A restarted server ended the session; nothing was sent that could have written.
                self._close_query()
        conn = self._connect()
        try:
            timeout_ms = str(max(1, round(self.store.timeout * 1000)))
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [timeout_ms])
            # Timestamps compare and hash the same whatever the server's default zone.
            conn.execute("SELECT set_config('TimeZone', 'UTC', false)")
            self._check_schema(conn)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    def _regclass(self, conn: PgConnection) -> str:
        return self.table.as_string(conn)

    def _check_schema(self, conn: PgConnection) -> None:
        present = {
            str(name): str(declared)
            for name, declared in conn.execute(
                "SELECT a.attname, a.atttypid::regtype::text FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                [self._regclass(conn)],
            )
        }
        self.check_columns(present)
        self.binary_value = present[self.store.columns.value] == "bytea"

    def trigger_installed(self) -> bool:
        """Whether the table has the NOTIFY trigger."""
        with self.query_lock:
            conn = self.connection()
            found = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s AND NOT tgisinternal",
                [self._regclass(conn), TRIGGER_NAME],
            ).fetchone()
        return found is not None

    def _select(self) -> sql.Composed:
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in self.store.columns.names())
        return sql.SQL("SELECT {} FROM {}").format(columns, self.table)

    def rows(self) -> list[Row]:
        """LISTEN first, then read: a change committed after the read is always notified."""
        self._ensure_listener()
        with self.query_lock:
            return self.connection().execute(self._select()).fetchall()

    def update(self, table_key: str, value: bytes | str, value_type: str, expected_etag: str) -> Row:
        """SELECT … FOR UPDATE locks the row until commit, so the check and the UPDATE are one step."""
        columns = self.store.columns
        where = sql.SQL(" WHERE {} = %s").format(sql.Identifier(columns.key))
        with self.query_lock:
            conn = self.connection()
            with conn.transaction():
                current = conn.execute(self._select() + where + sql.SQL(" FOR UPDATE"), [table_key]).fetchone()
                if current is None or snapshot_of(current).etag != expected_etag:
                    raise self.aborted(table_key, gone=current is None)
                row = conn.execute(
                    sql.SQL("UPDATE {} SET {} = %s, {} = %s, {} = now()").format(
                        self.table,
                        sql.Identifier(columns.value),
                        sql.Identifier(columns.value_type),
                        sql.Identifier(columns.updated_at),
                    )
                    + where
                    + sql.SQL(" RETURNING {}").format(
                        sql.SQL(", ").join(sql.Identifier(name) for name in columns.names())
                    ),
                    [value, value_type, table_key],
                ).fetchone()
        assert row is not None  # the row is locked: the UPDATE cannot miss it
        return row

    def _ensure_listener(self) -> PgConnection:
        with self.listen_lock:
            if self.listener is None:
                conn = self._connect()
                try:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.store.channel)))
                except BaseException:
                    conn.close()
                    raise
                self.listener = conn
            return self.listener

    def _drop_listener(self, conn: PgConnection) -> None:
        with self.listen_lock:
            if self.listener is conn:
                self.listener = None
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def wait(self, timeout: float) -> None:
        """Return on the first notification, when the listening connection is lost or made anew, or at ``timeout``."""
        deadline = time.monotonic() + timeout
        next_attempt = 0.0
        with self.wait_lock:
            while not self.closing.is_set():
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    return
                listener = self.listener
                if listener is None:
                    if now >= next_attempt:
                        # Retried every few seconds, so a database that is back is
                        # noticed then, not at the watcher's (backed-off) next listing.
                        next_attempt = now + RECONNECT_INTERVAL
                        try:
                            self._ensure_listener()
                        except psycopg.Error:
                            logger.debug("store %s: cannot LISTEN yet", self.store.alias, exc_info=True)
                        else:
                            return  # notifications sent while nobody listened are lost: list now
                    self.closing.wait(min(remaining, WAIT_SLICE))
                    continue
                try:
                    if self._notified(listener, min(remaining, WAIT_SLICE)):
                        return
                except psycopg.Error:
                    logger.info("store %s: lost the LISTEN connection", self.store.alias)
                    self._drop_listener(listener)
                    return  # list now, which reports the failure or catches up

    @staticmethod
    def _notified(listener: PgConnection, timeout: float) -> bool:
        gen = listener.notifies(timeout=timeout)
        try:
            received = next(gen, None) is not None
        finally:
            gen.close()
        if received:
            # Consume what else has arrived too: one listing covers a burst of changes.
            drain = listener.notifies(timeout=0.0)
            try:
                for _ in drain:
                    pass
            finally:
                drain.close()
        return received

    def _close_query(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = None

    def close_connections(self) -> None:
        """Close both connections."""
        with self.listen_lock:
            listener, self.listener = self.listener, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error):
                listener.close()
        with self.query_lock:
            self._close_query()

    # The trigger

    def trigger_statements(self) -> list[sql.Composed]:
        """The statements that install the NOTIFY trigger, in order."""
        store = self.store
        function = sql.Identifier(*store.table_parts[:-1], _trigger_function_name(store.table_parts[-1]))
        key = sql.Identifier(store.columns.key)
        channel = sql.Literal(store.channel)
        limit = sql.Literal(NOTIFY_PAYLOAD_CHARS)
        body = sql.SQL(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $datastream$\n"
            "BEGIN\n"
            "  IF TG_OP = 'TRUNCATE' THEN\n"
            "    PERFORM pg_notify({channel}, '');\n"
            "  ELSIF TG_OP = 'DELETE' THEN\n"
            "    PERFORM pg_notify({channel}, left(OLD.{key}::text, {limit}));\n"
            "  ELSE\n"
            "    PERFORM pg_notify({channel}, left(NEW.{key}::text, {limit}));\n"
            "    IF TG_OP = 'UPDATE' AND OLD.{key} IS DISTINCT FROM NEW.{key} THEN\n"
            "      PERFORM pg_notify({channel}, left(OLD.{key}::text, {limit}));\n"
            "    END IF;\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END\n"
            "$datastream$"
        ).format(function=function, channel=channel, key=key, limit=limit)
        trigger = sql.Identifier(TRIGGER_NAME)
        truncate = sql.Identifier(TRIGGER_NAME + "_truncate")
        return [
            body,
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, self.table),
            sql.SQL(
                "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
            ).format(trigger, self.table, function),
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(truncate, self.table),
            sql.SQL("CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()").format(
                truncate, self.table, function
            ),
        ]

    def drop_statements(self) -> list[sql.Composed]:
        """The statements that remove the trigger and its function."""
        function = sql.Identifier(*self.store.table_parts[:-1], _trigger_function_name(self.store.table_parts[-1]))
        return [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_NAME), self.table),
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_NAME + "_truncate"), self.table),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function),
        ]

    def script(self, statements: list[sql.Composed]) -> str:
        """``statements`` as one SQL script, for a DBA to read or run."""
        with self.query_lock:
            conn = self.connection()
            return "BEGIN;\n" + "".join(f"{s.as_string(conn)};\n" for s in statements) + "COMMIT;\n"

    def run(self, statements: list[sql.Composed]) -> None:
        """Run ``statements`` in one transaction."""
        with self.query_lock:
            conn = self.connection()
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)


def _trigger_function_name(table: str) -> str:
    # One function per table: its body names the table's key column and channel.
    return f"{TRIGGER_NAME}_{table}"[:63]


def _quote_sqlite(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def default_channel(table: str) -> str:
    """The NOTIFY channel used unless OPTIONS name one: derived from the table name."""
    return (re.sub(r"[^A-Za-z0-9_]", "_", table) + "_changed")[:63]


class SQLStore(MirroredStore):
    """Serves a key/value table of a SQLite file or a PostgreSQL database that other programs write.

    OPTIONS: ``url`` (required: ``sqlite:///relative/path``, ``sqlite:////absolute/path``
    or ``postgres://user:password@host:port/db``), ``table`` ("datastream";
    ``schema.table`` allowed), ``key_column`` ("key"), ``value_column`` ("value"),
    ``value_type_column`` ("value_type"), ``updated_at_column`` ("updated_at"),
    ``poll_interval`` (5 s on SQLite, 30 s on PostgreSQL), ``channel`` (PostgreSQL
    NOTIFY channel, default ``<table>_changed``), ``timeout`` (seconds to connect,
    per statement and waiting for a lock, 10), ``stale_after``, ``lease_seconds`` and
    ``webhook_secret`` (see MirroredStore).
    """

    def __init__(
        self,
        *,
        alias: str,
        prefix: str = "",
        url: str = "",
        table: str = "datastream",
        key_column: str = "key",
        value_column: str = "value",
        value_type_column: str = "value_type",
        updated_at_column: str = "updated_at",
        poll_interval: float | None = None,
        channel: str | None = None,
        timeout: float = 10.0,
        stale_after: float | None = None,
        lease_seconds: float | None = None,
        webhook_secret: str = "",
        **unknown: Any,
    ) -> None:
        # Before anything else: a misspelt option must not surface as another error.
        reject_unknown_options(alias, unknown)
        where = f'DATASTREAM["STORES"][{alias!r}]["OPTIONS"]'
        if not url:
            raise ImproperlyConfigured(f'{where} needs "url": sqlite:///path or postgres://user@host/db')
        scheme = url.split(":", 1)[0].lower()
        if scheme not in {"sqlite", "postgres", "postgresql"}:
            raise ImproperlyConfigured(f'{where}["url"] must start with sqlite:/// or postgres://, not {scheme}:')
        if not table or any(not part for part in table.split(".")) or table.count(".") > 1:
            raise ImproperlyConfigured(f'{where}["table"] = {table!r} is not a table or schema.table name')
        self.table = table
        self.table_parts: tuple[str, ...] = tuple(table.split("."))
        self.columns = Columns(key_column, value_column, value_type_column, updated_at_column)
        self.channel = channel or default_channel(self.table_parts[-1])
        if not CHANNEL_PATTERN.fullmatch(self.channel):
            raise ImproperlyConfigured(
                f'{where}["channel"] = {self.channel!r}: '
                "use letters, digits and _ (at most 63, not starting with a digit)"
            )
        self.timeout = float(timeout)
        if poll_interval is None:
            poll_interval = SQLITE_POLL_INTERVAL if scheme == "sqlite" else POSTGRES_POLL_INTERVAL
        super().__init__(
            alias=alias,
            prefix=prefix,
            poll_interval=poll_interval,
            stale_after=stale_after,
            lease_seconds=lease_seconds,
            webhook_secret=webhook_secret,
        )
        self.engine: _SQLite | _Postgres
        if scheme == "sqlite":
            if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
                raise ImproperlyConfigured(
                    f'{where}["url"] must be sqlite:///relative/path or sqlite:////absolute/path'
                )
            # As DATABASE_URL (dj-database-url): what follows the third slash is the path.
            self.engine = _SQLite(self, url[len("sqlite:///") :])
        else:
            try:
                psycopg.conninfo.conninfo_to_dict(url)
            except psycopg.ProgrammingError as exc:
                raise ImproperlyConfigured(f'{where}["url"] is not a valid PostgreSQL URL: {exc}') from None
            self.engine = _Postgres(self, url)
        self.engine.start()

    @property
    def engine_name(self) -> str:
        """The engine: sqlite or postgresql."""
        return self.engine.name

    def describe(self) -> str:
        """The table and where it lives, without secrets."""
        return f"table {self.table!r} of {self.engine.describe()}"

    def fetch(self) -> dict[str, Snapshot]:
        """Read the whole table: every row becomes PREFIX + key."""
        result: dict[str, Snapshot] = {}
        for row in self.engine.rows():
            result[self.prefix + _as_text(row[0])] = snapshot_of(row)
        return result

    def write(self, key: str, value: bytes, value_type: str, expected_etag: str) -> Snapshot:
        """UPDATE the row if it still hashes to ``expected_etag``; Aborted (nothing written) if not."""
        table_key = key.removeprefix(self.prefix)
        param: bytes | str = value
        if self.engine.binary_value is False:
            try:
                param = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidValue(
                    f"column {self.columns.value!r} of table {self.table!r} holds text; "
                    "this value is not UTF-8 and cannot be stored there"
                ) from None
        return snapshot_of(self.engine.update(table_key, param, value_type, expected_etag))

    def wait(self, timeout: float) -> None:
        """Block until the table may have changed (NOTIFY, data_version) or ``timeout`` passes."""
        self.engine.wait(timeout)

    def close(self) -> None:
        """Close the store's connections; it reconnects if used again."""
        self.engine.close()

    # PostgreSQL trigger, for `manage.py installsqltrigger`

    def _postgres(self) -> _Postgres:
        if not isinstance(self.engine, _Postgres):
            raise ImproperlyConfigured(f"store {self.alias!r} uses SQLite, which needs no trigger")
        return self.engine

    def trigger_installed(self) -> bool:
        """Whether the NOTIFY trigger is on the table (PostgreSQL only)."""
        return self._postgres().trigger_installed()

    def trigger_sql(self, *, drop: bool = False) -> str:
        """The script that installs (or with ``drop``, removes) the NOTIFY trigger."""
        engine = self._postgres()
        return engine.script(engine.drop_statements() if drop else engine.trigger_statements())

    def install_trigger(self, *, drop: bool = False) -> None:
        """Install (or with ``drop``, remove) the NOTIFY trigger, in one transaction."""
        engine = self._postgres()
        engine.run(engine.drop_statements() if drop else engine.trigger_statements())
