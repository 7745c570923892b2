"""A subscriber whose process is stopped (SIGSTOP): kept and coalesced for a while, then dropped; it converges anyway.

The server's keepalive options make grpc-core set TCP_USER_TIMEOUT to
``grpc.keepalive_timeout_ms`` (10 s) on every connection. A stopped process
reads nothing, so its kernel's receive buffer fills and it advertises a zero
window; once the server's data has gone unacknowledged for that long, the
server's kernel aborts the connection. Before that the stream is kept and its
pending changes coalesce; after it, the client's stream ends and the client
reconnects to the current values. README "Known limits" has the figures.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from asgiref.sync import sync_to_async

from datastream_app.access import Grant, issue_token
from protos import datastream_pb2
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
BIG = 512 * 1024

# Subscribes to one key with a token, prints each value's counter, reconnects when the stream ends.
CLIENT = textwrap.dedent(
    """
    import sys, time, grpc
    from protos import datastream_pb2, datastream_pb2_grpc
    address, token, key = sys.argv[1:4]
    metadata = (("authorization", "Bearer " + token),)
    with grpc.insecure_channel(address) as channel:
        stub = datastream_pb2_grpc.DataServiceStub(channel)
        while True:
            try:
                for message in stub.Subscribe(datastream_pb2.DataRequest(keys=[key]), metadata=metadata):
                    print("VALUE", message.data[key].value[:8].decode(errors="replace"), flush=True)
            except grpc.RpcError as error:
                print("ENDED", error.code().name, flush=True)
            time.sleep(0.1)
    """
)


def value(counter: int) -> bytes:
    return b"%08d" % counter + b"y" * (BIG - 8)


class Client:
    """The subscriber in its own process; its output lines are queued as they come."""

    def __init__(self, port: int, token: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT, f"127.0.0.1:{port}", token, "blob"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    async def until_value(self, counter: str, timeout: float = 30.0) -> list[str]:
        """Every line up to and including VALUE ``counter``."""
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                line = await asyncio.to_thread(self.lines.get)
                seen.append(line)
                if line == f"VALUE {counter}":
                    return seen

    def stop(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()


@pytest.fixture
def tokens(demo) -> Iterator[dict[str, str]]:
    # One token per subscriber process, each allowed one stream (see _stream_still_held).
    _, early = issue_token(name="resumes-early", grants=[Grant("", read=True)])
    _, late = issue_token(name="resumes-late", grants=[Grant("", read=True)])
    _, writer = issue_token(name="pusher", grants=[Grant("", read=True, write=True)])
    yield {"early": early, "late": late, "writer": writer}


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _stream_still_held(stub, token: str) -> bool:
    # The token may hold one stream: a second one is refused while the
    # stopped client's stream lives, and accepted once the server dropped it.
    probe = stub.Subscribe(request("blob"), metadata=auth(token))
    try:
        await asyncio.wait_for(probe.read(), 10)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return True
    probe.cancel()
    return False


async def test_stopped_subscriber__resumed_within_the_window_coalesced__beyond_it_dropped_and_reconverges(tokens):
    limits = {"MAX_STREAMS_PER_TOKEN": 1, "PUSH_RATE_PER_TOKEN": 0}
    async with serving(DATASTREAM=limits) as (service, stub):
        counter = 0

        async def push() -> str:
            nonlocal counter
            counter += 1
            data = datastream_pb2.Data(key="blob", value=value(counter))
            await stub.PushUpdate(data, metadata=auth(tokens["writer"]))
            return f"{counter:08d}"

        # Each subscriber is stopped right after its first message, on a fresh
        # connection: its kernel never grew its receive buffer (a client that
        # once read fast may take the whole HTTP/2 window into its kernel, and
        # then nothing stays unacknowledged; README "Known limits").
        early = await sync_to_async(Client)(service.port, tokens["early"])
        late = await sync_to_async(Client)(service.port, tokens["late"])
        try:
            first = await push()
            await early.until_value(first)
            await late.until_value(first)
            early.stop()
            late.stop()

            # Within the window: 10 MiB of changes, far more than the transport holds.
            for _ in range(20):
                latest = await push()
            assert await _stream_still_held(stub, tokens["early"])
            early.cont()
            resumed = await early.until_value(latest)

            # Beyond it: keep pushing until the server has dropped the other stream.
            async with asyncio.timeout(45):
                while await _stream_still_held(stub, tokens["late"]):
                    await push()
                    await asyncio.sleep(0.2)
            latest = await push()
            late.cont()
            after_drop = await late.until_value(latest)
        finally:
            early.close()
            late.close()

    # Kept: no reconnect, and fewer messages than changes (the rest coalesced).
    assert not [line for line in resumed if line.startswith("ENDED")]
    assert len(resumed) < 20
    # Dropped: the stream ended, and the reconnected client holds the latest value.
    assert [line for line in after_drop if line.startswith("ENDED")]
