"""The cache file: never partial after a crash mid-write; a corrupt or foreign file is a warning, not a crash."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async

from datastream_app.access import Grant, issue_token
from datastream_client import Client, Unavailable, cache
from datastream_client.client import State
from tests.client.servers import ROOT, free_port
from tests.conftest import serving

WRITER = """
import sys
from datastream_client import cache
path, n = sys.argv[1], int(sys.argv[2])
while True:
    n += 1
    entries = {f"k{j:03}": cache.CachedEntry("string", (str(n) * 500).encode(), n) for j in range(300)}
    cache.write(path, target="t", keys=None, entries=entries)
    print(n, flush=True)
"""


def test_writer_killed_mid_write__repeatedly__the_file_always_loads(tmp_path, caplog):
    path = tmp_path / "cache.json"
    previous = 0
    for _ in range(15):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(previous)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        writes = int(writer.stdout.readline())  # it completed a write and is into the next one
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        with caplog.at_level(logging.WARNING, logger="datastream_client"):
            entries = cache.load(path, target="t", keys=None)
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        assert entries is not None and len(entries) == 300
        revision = entries["k000"].revision
        # A whole file: every entry from one and the same write, at least the one reported done.
        assert {e.revision for e in entries.values()} == {revision}
        assert revision >= writes
        assert entries["k299"].wire == (str(revision) * 500).encode()
        previous = revision


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"format": "datastream-client-cache", "version": 1, "target": "127.0.0.1:1", "keys": null, '
        b'"entries": {"x": {"value_type": "int", "value": "bm90IGFuIGludA==", "revision": 1}}}',  # "not an int"
        b'{"format": "datastream-client-cache", "version": 99}',
        b'{"format": "something-else"}',
        b"[1, 2]",
        b"\xff\xfe\x00garbage",
    ],
)
def test_load__corrupt_or_foreign_file__warning_and_none(tmp_path, caplog, content):
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="datastream_client"):
        assert cache.load(path, target="127.0.0.1:1", keys=None) is None
    assert any("ignored" in r.getMessage() for r in caplog.records)


def test_load__file_for_another_target_or_keys__ignored(tmp_path, caplog):
    path = tmp_path / "cache.json"
    cache.write(path, target="a:1", keys=["x"], entries={"x": cache.CachedEntry("int", b"1", 3)})
    assert cache.load(path, target="a:1", keys=["x"]) == {"x": cache.CachedEntry("int", b"1", 3)}
    with caplog.at_level(logging.WARNING, logger="datastream_client"):
        assert cache.load(path, target="b:1", keys=["x"]) is None
        assert cache.load(path, target="a:1", keys=None) is None
    assert len(caplog.records) == 2
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_start__corrupt_cache_and_no_server__unavailable_not_a_crash(tmp_path, caplog):
    path = tmp_path / "cache.json"
    path.write_bytes(b"\x00" * 100)
    client = Client(f"127.0.0.1:{free_port()}", cache_path=path, backoff_cap=0.2)
    with caplog.at_level(logging.WARNING, logger="datastream_client"), pytest.raises(Unavailable):
        client.start(timeout=1)
    assert any("ignored" in r.getMessage() for r in caplog.records)
    assert client.status.state is State.CLOSED


@pytest.mark.django_db(transaction=True)
async def test_start__corrupt_cache_and_a_server__warning_then_live_and_the_file_rewritten(demo, tmp_path, caplog):
    path = tmp_path / "cache.json"
    path.write_text("{truncated")
    async with serving() as (service, _):
        client = Client(f"127.0.0.1:{service.port}", cache_path=path)
        with caplog.at_level(logging.WARNING, logger="datastream_client"):
            await asyncio.to_thread(client.start, 10)
        try:
            assert client.status.state is State.LIVE
            assert client.get("max_connections") == 10
        finally:
            await asyncio.to_thread(client.close)
    assert any("ignored" in r.getMessage() for r in caplog.records)
    document = json.loads(path.read_text())
    assert document["entries"]["max_connections"] == {"value_type": "int", "value": "MTA=", "revision": 1}


@pytest.mark.django_db(transaction=True)
async def test_cache__token_without_cache_secrets__not_written_until_opted_in(demo, tmp_path, caplog):
    _, text = await sync_to_async(issue_token)(name="reader", grants=[Grant("", read=True)])
    path = tmp_path / "cache.json"
    async with serving() as (service, _):
        with caplog.at_level(logging.WARNING, logger="datastream_client"):
            refused = Client(f"127.0.0.1:{service.port}", token=text, cache_path=path)
        assert any("cache_secrets=True" in r.getMessage() for r in caplog.records)
        await asyncio.to_thread(refused.start, 10)
        await asyncio.to_thread(refused.close)
        assert not path.exists()

        opted = Client(f"127.0.0.1:{service.port}", token=text, cache_path=path, cache_secrets=True)
        await asyncio.to_thread(opted.start, 10)
        await asyncio.to_thread(opted.close)
    assert set(json.loads(path.read_text())["entries"]) == {
        "max_connections",
        "rate_limit",
        "debug_enabled",
        "ratio",
        "greeting",
        "limits",
        "blob",
    }
