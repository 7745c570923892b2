"""Client: a live, typed local copy of settings kept by one Subscribe stream, with a last-known-good cache.

Threads: one reads the stream (and reconnects), one runs the callbacks (so a
slow callback never holds up updates), and one writes the cache file at most
once per ``cache_interval``. Reads (``get``, ``client[key]``, ``items()``) take
a lock only and never touch the network.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import grpc

from datastream_client import cache, codec
from datastream_client._proto import datastream_pb2 as pb
from datastream_client._wire import Connection, messages
from datastream_client.errors import DatastreamError, NotFound, Unavailable, from_rpc_error

logger = logging.getLogger("datastream_client")

INITIAL_BACKOFF = 0.1
STABLE_AFTER = 5.0  # seconds a stream must stay up before reconnects start over at INITIAL_BACKOFF


class State(StrEnum):
    """Where the client's values come from right now."""

    CONNECTING = "connecting"  # start() has not finished yet
    LIVE = "live"  # the stream is up: values are current
    RECONNECTING = "reconnecting"  # the stream broke: values are the last ones received, retrying
    STALE = "stale"  # serving the cache file: the server has not answered since start(), retrying
    FAILED = "failed"  # the server refused the client (token, permission, unknown key): not retried
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Status:
    """The client's state, since when (a Unix time), and the error that caused it, if any."""

    state: State
    since: float
    error: DatastreamError | None = None

    def __str__(self) -> str:
        when = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        reason = f" ({self.error.describe()})" if self.error is not None else ""
        return f"{self.state} since {when}{reason}"


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change: its new and old value (None when absent), the revision, and whether it was deleted."""

    key: str
    value: Any
    old: Any
    revision: int
    value_type: str
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The first message of the current stream: how many entries it held, and from which revision it resumed.

    ``resumed_from`` 0: a full snapshot of the keys; otherwise only the keys
    changed (or deleted) after that revision, which the client asked for
    because it held everything up to it.
    """

    resumed_from: int
    entries: int
    at: float


@dataclass(frozen=True, slots=True)
class _Held:
    kind: codec.ValueType
    wire: bytes
    value: Any
    revision: int


@dataclass(frozen=True, slots=True, eq=False)
class _Listener:
    callback: Callable[[Change], Any]
    keys: frozenset[str] | None


_MISSING: Any = object()

# The server refused the request itself: retrying the same request cannot help.
_FATAL = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def _public(held: _Held) -> Any:
    # json values are mutable: each reader gets its own copy of ours.
    return copy.deepcopy(held.value) if held.kind is codec.ValueType.JSON else held.value


class Client:
    """A live local copy of settings from a datastream server.

    ``keys``: the keys to hold (None: every key the token can read, including
    keys created later). ``tls``: None for plaintext, True for the system's
    CAs, a CA file path, or ``grpc.ChannelCredentials``. ``client_name`` is
    sent with every call as ``x-datastream-client: <name>/<version>``
    (default: the program's name). ``backoff_cap`` bounds the jittered
    exponential wait between reconnects, in seconds.

    ``cache_path``: the last-known-good file. ``start()`` reads it, and serves
    it marked ``stale`` when the server cannot be reached. The client writes
    it after applied changes (at most once per ``cache_interval`` seconds, and
    on ``close()``). The wire does not say which settings are secret, so the
    file holds every value the client holds: without a token (anonymous
    callers never receive secret values) it is written; with a token it is
    written only if ``cache_secrets=True``, which says "writing whatever this
    token can read to this file is fine" (always true for a token without
    secret read). The file is created mode 0600.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        keys: Sequence[str] | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        tls: Any = None,
        client_name: str | None = None,
        backoff_cap: float = 10.0,
        *,
        cache_secrets: bool = False,
        cache_interval: float = 0.5,
    ) -> None:
        if isinstance(keys, str):
            raise TypeError("keys must be a list of key names, not one string")
        self.target = target
        self.keys: list[str] | None = None if keys is None else list(dict.fromkeys(keys))
        self.cache_path = None if cache_path is None else os.fspath(cache_path)
        self.backoff_cap = max(INITIAL_BACKOFF, backoff_cap)
        self.cache_interval = cache_interval
        self._cache_writes = self.cache_path is not None and (token is None or cache_secrets)
        if self.cache_path is not None and not self._cache_writes:
            logger.warning(
                "cache file %s is read but not written: a token may read secret values, which the wire does not "
                "mark; pass cache_secrets=True to write it anyway",
                self.cache_path,
            )
        self._conn = Connection(target, token=token, tls=tls, client_name=client_name, reconnect_cap=self.backoff_cap)
        self._lock = threading.Condition()
        self._held: dict[str, _Held] = {}
        self._revision = 0
        self._status = Status(State.CONNECTING, time.time())
        self._listeners: list[_Listener] = []
        # Each batch goes with the listeners registered when it was applied:
        # a listener added later does not see older changes.
        self._events: queue.SimpleQueue[tuple[list[Change], list[_Listener]] | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._cache_wake = threading.Event()
        self._cache_dirty = False
        self._cache_loaded = False
        self._synced = False  # a snapshot from the server was applied at least once
        self._snapshot: Snapshot | None = None
        self._attempted = False  # the stream thread tried at least once
        self._call: Any = None
        self._threads: list[threading.Thread] = []
        self._started = False

    # Lifecycle

    def start(self, timeout: float = 5.0) -> Self:
        """Connect and wait for the first snapshot, at most ``timeout`` seconds.

        With the server unreachable: serve the cache file (status ``stale``)
        if there is one and keep reconnecting, else raise Unavailable. A
        refusal (Unauthenticated, PermissionDenied, NotFound) is raised.
        """
        if self._started:
            raise RuntimeError("start() was already called")
        self._started = True
        if self.cache_path is not None:
            entries = cache.load(self.cache_path, target=self.target, keys=self.keys)
            if entries:
                self._load_cache(entries)
        self._spawn(self._dispatch_loop, "datastream-callbacks")
        self._spawn(self._stream_loop, "datastream-stream")
        if self._cache_writes:
            self._spawn(self._cache_loop, "datastream-cache")
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                state = self._status.state
                if state in (State.LIVE, State.FAILED):
                    break
                if self._cache_loaded and self._attempted:
                    break  # unreachable at the first try: the cache, marked stale, will do
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            status = self._status
        if status.state is State.LIVE:
            return self
        if status.state is State.FAILED:
            self.close()
            assert status.error is not None
            raise status.error
        if self._cache_loaded:
            with self._lock:
                if self._status.state is not State.LIVE:
                    self._set_status(State.STALE, self._status.error)
            logger.warning("%s unreachable: serving the cache file %s (stale)", self.target, self.cache_path)
            return self
        self.close()
        reason = f": {status.error.message}" if status.error is not None else ""
        raise Unavailable(f"{self.target} did not answer within {timeout:g}s{reason}")

    def close(self) -> None:
        """Stop the stream and the threads, write the cache file if it changed, close the channel."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            call = self._call
            self._set_status(State.CLOSED)
        if call is not None:
            call.cancel()
        self._events.put(None)
        self._cache_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        if self._cache_writes and self._cache_dirty:
            self._write_cache()
        self._conn.close()

    def __enter__(self) -> Self:
        return self if self._started else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Reading

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key``, typed by its value_type; ``default`` if the key is unknown, else KeyError."""
        with self._lock:
            held = self._held.get(key)
        if held is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return _public(held)

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._held

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_held())

    def keys_held(self) -> list[str]:
        """The keys held now, sorted."""
        with self._lock:
            return sorted(self._held)

    def items(self) -> list[tuple[str, Any]]:
        """(key, value) of every key held, sorted by key."""
        with self._lock:
            held = sorted(self._held.items())
        return [(key, _public(h)) for key, h in held]

    def value_type(self, key: str) -> str:
        """The value_type of a held key (KeyError if not held)."""
        with self._lock:
            return self._held[key].kind.value

    def revision_of(self, key: str) -> int:
        """The revision of a held key's value (KeyError if not held)."""
        with self._lock:
            return self._held[key].revision

    @property
    def revision(self) -> int:
        """The highest revision held (0 before anything arrived)."""
        with self._lock:
            return self._revision

    @property
    def last_snapshot(self) -> Snapshot | None:
        """The first message of the latest stream (None before one arrived): full or resumed, and its size."""
        with self._lock:
            return self._snapshot

    @property
    def status(self) -> Status:
        """live / reconnecting / stale / failed / ..., since when, and why."""
        with self._lock:
            return self._status

    def wait_for(self, revision: int, timeout: float | None = None) -> int:
        """Block until a revision ≥ ``revision`` is held; return the revision held. TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._revision < revision:
                if self._closed.is_set():
                    raise RuntimeError("client is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    held = self._revision
                    raise TimeoutError(f"revision {revision} not received within {timeout:g}s (holding {held})")
                self._lock.wait(remaining)
            return self._revision

    def on_change(self, callback: Callable[[Change], Any], keys: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(change)`` for each change (of ``keys`` only, if given); returns the unsubscribe function.

        Callbacks run one at a time on the client's callback thread, in
        revision order, never on the thread reading the stream. One that
        raises is logged and stays subscribed.
        """
        listener = _Listener(callback, None if keys is None else frozenset(keys))
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # Writing

    def set(self, key: str, value: Any, expected_revision: int | None = None, *, value_type: str | None = None) -> int:
        """Push ``value`` to ``key`` (PushUpdate), encoded by the key's value_type; return the key's new revision.

        The type comes from the value held, else from ListCapabilities, else
        from ``value_type``. A value that does not fit the type raises
        InvalidValue with the message the server gives for it (same codec);
        the server's refusals (schema, permission, limits) raise the matching
        DatastreamError with the server's reason.

        PushUpdate answers Empty, so the revision comes from a Sync of the key
        right after the push: the push's own revision, or a later one if
        another write followed (for a value equal to the current one, the
        revision the key already had; 0 if the token may write but not read
        the key). When the key is among the client's keys, ``set`` also waits
        (up to 10 s) until the stream delivered it, so ``get(key)`` afterwards
        sees the new value.

        ``expected_revision`` (compare-and-set) raises NotImplementedError:
        the server does not support it yet.
        """
        if expected_revision is not None:
            raise NotImplementedError("compare-and-set (expected_revision) is not supported by the server yet")
        kind = self._kind_for(key, value_type)
        wire = codec.encode_wire(kind, codec.check_python(kind, value))
        revision = self._conn.push_revision(key, wire, kind.value)
        if revision and (self.keys is None or key in self.keys) and self.status.state is State.LIVE:
            with contextlib.suppress(TimeoutError, RuntimeError):
                self.wait_for(revision, timeout=10)
        return revision

    def capabilities(self) -> dict[str, str]:
        """Every key the token can read, with its value_type (one ListCapabilities call)."""
        return self._conn.capabilities()

    def _kind_for(self, key: str, value_type: str | None) -> codec.ValueType:
        if value_type is not None:
            return codec.parse_value_type(value_type)
        with self._lock:
            held = self._held.get(key)
        if held is not None:
            return held.kind
        known = self._conn.capabilities().get(key)
        if known is None:
            raise NotFound(f"unknown key {key!r}")
        return codec.parse_value_type(known)

    # The stream

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _set_status(self, state: State, error: DatastreamError | None = None) -> None:
        # Callers hold the lock. "since" moves only when the state changes.
        if self._status.state is State.CLOSED:
            return
        if self._status.state is not state:
            self._status = Status(state, time.time(), error)
        elif error is not self._status.error:
            self._status = Status(state, self._status.since, error)
        self._lock.notify_all()

    def _stream_loop(self) -> None:
        backoff = INITIAL_BACKOFF
        keys = self.keys or []
        while not self._closed.is_set():
            with self._lock:
                # The first connection asks for everything; reconnects resume from what is held.
                since = self._revision if self._synced else 0
                call = self._conn.subscribe(keys, since_revision=since)
                self._call = call
            if self._closed.is_set():
                call.cancel()
                return
            connected_at: float | None = None
            try:
                first = True
                for response in messages(call):
                    self._apply(response, first=first)
                    if first:
                        first = False
                        connected_at = time.monotonic()
                error: DatastreamError = Unavailable("the server ended the stream")
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    return
                error = from_rpc_error(exc)
                if exc.code() in _FATAL:
                    logger.error("%s refused the subscription: %s", self.target, error.describe())
                    with self._lock:
                        self._attempted = True
                        self._set_status(State.FAILED, error)
                    return
            except Exception as exc:  # a bug of ours must not end the stream for good
                if self._closed.is_set():
                    return
                logger.exception("datastream stream failed")
                error = DatastreamError(f"client error: {exc}")
            finally:
                call.cancel()
            # A stream that stayed up a while starts the backoff over; one that
            # breaks right after its snapshot keeps backing off.
            if connected_at is not None and time.monotonic() - connected_at > STABLE_AFTER:
                backoff = INITIAL_BACKOFF
            delay = min(self.backoff_cap, backoff) * (0.5 + random.random() / 2)
            backoff = min(self.backoff_cap, backoff * 2)
            with self._lock:
                self._attempted = True
                if self._synced or not self._cache_loaded:
                    self._set_status(State.RECONNECTING, error)
                else:
                    self._set_status(State.STALE, error)
            logger.warning("%s: %s; reconnecting in %.1fs", self.target, error.describe(), delay)
            if self._closed.wait(delay):
                return

    def _apply(self, response: pb.DataResponse, *, first: bool) -> None:
        incoming = dict(response.data)
        # The first message of a stream is the full snapshot, which replaces the
        # copy (keys it lacks are gone), unless the server answered `since` from
        # its history: then it is marked `resumed_from` and holds only what
        # changed after it (possibly nothing). A server that ignores
        # since_revision never marks it.
        full = first and response.resumed_from == 0
        changes: list[Change] = []
        with self._lock:
            if self._closed.is_set():
                return
            for key, data in incoming.items():
                held = self._held.get(key)
                old = None if held is None else _public(held)
                if data.deleted:
                    if held is not None:
                        del self._held[key]
                        changes.append(Change(key, None, old, data.revision, held.kind.value, deleted=True))
                    continue
                try:
                    kind = codec.parse_value_type(data.value_type)
                    value = codec.decode_wire(kind, data.value)
                except DatastreamError as exc:
                    logger.warning("%s: value of %r skipped: %s", self.target, key, exc.message)
                    continue
                self._held[key] = _Held(kind, bytes(data.value), value, data.revision)
                if held is None or held.kind is not kind or held.wire != data.value:
                    changes.append(Change(key, _public(self._held[key]), old, data.revision, kind.value))
            if full:
                for key in [k for k in self._held if k not in incoming]:
                    gone = self._held.pop(key)
                    changes.append(Change(key, None, _public(gone), gone.revision, gone.kind.value, deleted=True))
                self._revision = max((h.revision for h in self._held.values()), default=0)
            else:
                self._revision = max(self._revision, max((d.revision for d in incoming.values()), default=0))
            if first:
                self._snapshot = Snapshot(response.resumed_from, len(incoming), time.time())
                self._synced = True
                self._attempted = True
                self._set_status(State.LIVE)
            self._lock.notify_all()
            if self._cache_writes:
                self._cache_dirty = True
            if changes:
                changes.sort(key=lambda c: (c.revision, c.key))
                self._events.put((changes, list(self._listeners)))
        if self._cache_writes:
            self._cache_wake.set()

    def _dispatch_loop(self) -> None:
        while True:
            batch = self._events.get()
            if batch is None:
                return
            changes, listeners = batch
            for change in changes:
                for listener in listeners:
                    if listener.keys is not None and change.key not in listener.keys:
                        continue
                    with self._lock:
                        if listener not in self._listeners:
                            continue  # unsubscribed meanwhile
                    try:
                        listener.callback(change)
                    except Exception:
                        logger.exception("datastream on_change callback %r failed on %r", listener.callback, change.key)

    # The cache file

    def _load_cache(self, entries: dict[str, cache.CachedEntry]) -> None:
        with self._lock:
            for key, entry in entries.items():
                kind = codec.parse_value_type(entry.value_type)
                self._held[key] = _Held(kind, entry.wire, codec.decode_wire(kind, entry.wire), entry.revision)
            self._revision = max((e.revision for e in entries.values()), default=0)
            self._cache_loaded = True

    def _cache_loop(self) -> None:
        while True:
            self._cache_wake.wait()
            if self._closed.is_set():
                return  # close() writes what is left
            self._cache_wake.clear()
            self._write_cache()
            # Coalesce: changes arriving during the pause go into the next write.
            if self._closed.wait(self.cache_interval):
                return

    def _write_cache(self) -> None:
        assert self.cache_path is not None
        with self._lock:
            if not self._cache_dirty:
                return
            self._cache_dirty = False
            entries = {k: cache.CachedEntry(h.kind.value, h.wire, h.revision) for k, h in self._held.items()}
        try:
            cache.write(self.cache_path, target=self.target, keys=self.keys, entries=entries)
        except OSError as exc:
            logger.warning("cache file %s not written: %s", self.cache_path, exc)
