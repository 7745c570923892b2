"""AsyncClient: the Client's surface for asyncio programs.

It runs the same engine (one Subscribe stream on its own thread, a callback
thread, the cache writer); blocking calls go through ``asyncio.to_thread`` and
changes are handed to the event loop, so nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self

from datastream_client.client import _MISSING, Change, Client, Snapshot, Status


class AsyncClient:
    """``Client`` for asyncio: ``await client.start()``, ``async for change in client.changes()``.

    Takes the same arguments as Client. Reads (``get``, ``[]``, ``in``,
    ``items()``, ``revision``, ``status``) are plain calls; ``start``,
    ``set``, ``wait_for`` and ``close`` are awaited. ``on_change`` callbacks
    run on the event loop (coroutine functions become tasks).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client = Client(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: set[asyncio.Queue[Change | None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, timeout: float = 5.0) -> Self:  # noqa: ASYNC109 - the same surface as Client
        """As Client.start, awaited."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._client.start, timeout)
        return self

    async def close(self) -> None:
        """As Client.close; ends every ``changes()`` iterator."""
        await asyncio.to_thread(self._client.close)
        for stream in list(self._streams):
            stream.put_nowait(None)

    async def __aenter__(self) -> Self:
        return self if self._loop is not None else await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """As Client.get."""
        return self._client.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._client[key]

    def __contains__(self, key: object) -> bool:
        return key in self._client

    def items(self) -> list[tuple[str, Any]]:
        """As Client.items."""
        return self._client.items()

    def value_type(self, key: str) -> str:
        """As Client.value_type."""
        return self._client.value_type(key)

    @property
    def revision(self) -> int:
        """The highest revision held."""
        return self._client.revision

    @property
    def status(self) -> Status:
        """live / reconnecting / stale / failed / ..., since when, and why."""
        return self._client.status

    @property
    def last_snapshot(self) -> Snapshot | None:
        """As Client.last_snapshot."""
        return self._client.last_snapshot

    async def wait_for(self, revision: int, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """As Client.wait_for, awaited."""
        return await asyncio.to_thread(self._client.wait_for, revision, timeout)

    async def set(
        self, key: str, value: Any, expected_revision: int | None = None, *, value_type: str | None = None
    ) -> int:
        """As Client.set, awaited."""
        return await asyncio.to_thread(self._client.set, key, value, expected_revision, value_type=value_type)

    def on_change(self, callback: Callable[[Change], Any], keys: Iterable[str] | None = None) -> Callable[[], None]:
        """As Client.on_change, but ``callback`` runs on the event loop; returns the unsubscribe function."""
        loop = self._running_loop()

        def run(change: Change) -> None:
            result = callback(change)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        def hand_over(change: Change) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(run, change)

        return self._client.on_change(hand_over, keys)

    async def changes(self, keys: Iterable[str] | None = None) -> AsyncIterator[Change]:
        """Every change from now on (of ``keys`` only, if given), until the client closes."""
        loop = self._running_loop()
        stream: asyncio.Queue[Change | None] = asyncio.Queue()
        self._streams.add(stream)

        def hand_over(change: Change) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stream.put_nowait, change)

        unsubscribe = self._client.on_change(hand_over, keys)
        try:
            while True:
                change = await stream.get()
                if change is None:
                    return
                yield change
        finally:
            unsubscribe()
            self._streams.discard(stream)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()
