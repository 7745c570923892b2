"""Publishes committed changes to the channel layer from any thread, in order, without blocking.

Every send runs on one long-lived event loop: the hub's loop when this process
runs one (the in-memory layer only delivers within its own loop), otherwise a
background thread's loop (so channels_redis keeps one connection instead of
opening one per ``async_to_sync`` call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from channels.layers import get_channel_layer

from datastream_app.changes import Entry

logger = logging.getLogger(__name__)

GROUP = "datastream.changes"
# A group message asking whichever process watches a store to list it now.
REFRESH_TYPE = "datastream.refresh"


def refresh_message(alias: str) -> dict[str, Any]:
    """The group message asking for store ``alias`` to be listed now."""
    return {"type": REFRESH_TYPE, "store": alias}


class Publisher:
    """Sends change messages to the layer group on one event loop, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._own_thread: threading.Thread | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send from ``loop`` from now on (called by the hub when it starts)."""
        with self._lock:
            old = (self._own_thread, self._loop, self._sender, self._queue)
            self._own_thread = None
            self._loop = loop
            self._queue = None
            self._sender = None
        # Outside the lock: the old loop's pending _enqueue calls need it.
        self._stop_own_thread(*old)

    async def detach(self) -> None:
        """Send what is queued, then stop sending from the running loop (the hub stops)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop:
                return
            sender, queue = self._sender, self._queue
            self._loop = self._queue = self._sender = None
        if sender is None or queue is None:
            return
        try:
            await asyncio.wait_for(self._drain(queue), timeout=2.0)
        except TimeoutError:
            logger.warning("publisher: %d changes unsent at shutdown; hubs resync them", queue.qsize())
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    @staticmethod
    async def _drain(queue: asyncio.Queue[dict[str, Any]]) -> None:
        await queue.join()

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything queued so far was sent (short-lived processes); False on timeout.

        Call it from a thread, never from the loop that sends.
        """
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return True

        async def drained() -> None:
            # Runs after the _enqueue callbacks scheduled before it (FIFO).
            if self._queue is not None:
                await self._queue.join()

        try:
            asyncio.run_coroutine_threadsafe(drained(), loop).result(timeout)
        except TimeoutError:
            return False
        return True

    def publish(self, entry: Entry) -> None:
        """Queue ``entry`` for sending; safe from any thread, never blocks on the network."""
        self.send(entry.to_message())

    def send(self, message: dict[str, Any]) -> None:
        """Queue any group message (a change, a refresh request) for sending, from any thread."""
        with self._lock:
            loop = self._loop
            if loop is None or loop.is_closed():
                loop = self._start_own_thread()
        try:
            loop.call_soon_threadsafe(self._enqueue, loop, message)
        except RuntimeError:
            # The loop closed between the check and the call (process shutting
            # down); the hubs' periodic resync from the database covers it.
            logger.warning("%s skipped: event loop closed", _describe(message))

    def _enqueue(self, loop: asyncio.AbstractEventLoop, message: dict[str, Any]) -> None:
        with self._lock:
            moved = self._loop is not loop
            if not moved and (self._queue is None or self._sender is None or self._sender.done()):
                self._queue = asyncio.Queue()
                self._sender = loop.create_task(self._send_loop(self._queue), name="datastream-publisher")
            queue = self._queue
        if moved or queue is None:
            # Sending moved to another loop meanwhile: hand the message over.
            self.send(message)
            return
        queue.put_nowait(message)

    async def _send_loop(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        layer = get_channel_layer()
        if layer is None:
            logger.error("no channel layer configured: changes are not published")
            return
        while True:
            message = await queue.get()
            try:
                await layer.group_send(GROUP, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A lost message is repaired by every hub's resync from the
                # database; log it so an operator sees the layer is unhealthy.
                logger.exception("%s failed", _describe(message))
            finally:
                queue.task_done()

    def _start_own_thread(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_own_loop, args=(loop,), name="datastream-publisher", daemon=True)
        thread.start()
        self._loop = loop
        self._own_thread = thread
        return loop

    @staticmethod
    def _run_own_loop(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            # Closed in its own thread: channels_redis runs this loop on close
            # to release its connection, impossible from a thread whose loop runs.
            loop.close()

    def _stop_own_thread(
        self,
        thread: threading.Thread | None,
        loop: asyncio.AbstractEventLoop | None,
        sender: asyncio.Task[None] | None,
        queue: asyncio.Queue[dict[str, Any]] | None,
    ) -> None:
        if thread is None or loop is None:
            return

        async def shutdown() -> None:
            if sender is not None and queue is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drain(queue), timeout=2.0)
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def _describe(message: dict[str, Any]) -> str:
    return (
        f"publishing {message.get('type')} {message.get('key', message.get('store', ''))}@{message.get('revision', '')}"
    )


publisher = Publisher()
