"""The server killed and restarted under live clients: memory, then the cache file, then convergence."""

from __future__ import annotations

import threading

from datastream_client import Client, cache
from datastream_client.client import Change, State
from tests.client.servers import eventually

DELETE_RATE_LIMIT = (
    "from datastream_app import services; from datastream_app.models import Setting; "
    "services.delete_setting(setting=Setting.objects.get(key='rate_limit'))"
)


def test_sigkill_and_restart__memory_then_stale_cache_then_both_converge(server, tmp_path):
    cache_file = tmp_path / "settings-cache.json"
    first = Client(server.target, cache_path=cache_file, backoff_cap=0.3, cache_interval=0.05)
    first.start(timeout=20)
    second: Client | None = None
    try:
        assert first.status.state is State.LIVE
        held = dict(first.items())
        assert held["max_connections"] == 10
        eventually(lambda: cache_file.exists(), "cache file written")
        assert cache.load(cache_file, target=server.target, keys=None) is not None

        server.kill()
        eventually(lambda: first.status.state is State.RECONNECTING, "first client reconnecting")
        assert first.get("max_connections") == 10
        assert dict(first.items()) == held

        second = Client(server.target, cache_path=cache_file, backoff_cap=0.3)
        second.start(timeout=20)  # returns at the first failed attempt: the cache will do
        assert second.status.state is State.STALE
        assert second.status.error is not None and second.status.error.code == "UNAVAILABLE"
        assert dict(second.items()) == held
        deletions: list[Change] = []
        deleted = threading.Event()

        def on_deletion(change: Change) -> None:
            if change.deleted:
                deletions.append(change)
                deleted.set()

        second.on_change(on_deletion)

        # Deleted while the server is down: the snapshot after the restart lacks it.
        server.manage("shell", "-c", DELETE_RATE_LIMIT)
        server.start()
        eventually(lambda: first.status.state is State.LIVE, "first client live again")
        eventually(lambda: second.status.state is State.LIVE, "second client live")
        assert deleted.wait(10)
        assert [(c.key, c.old) for c in deletions] == [("rate_limit", 1000)]
        assert "rate_limit" not in first
        assert "rate_limit" not in second

        revision = first.set("max_connections", 77)
        assert first.get("max_connections") == 77
        second.wait_for(revision, timeout=20)
        assert second.get("max_connections") == 77
        assert dict(first.items()) == dict(second.items())
    finally:
        first.close()
        if second is not None:
            second.close()
    # close() wrote what the first client held last.
    entries = cache.load(cache_file, target=server.target, keys=None)
    assert entries is not None
    assert entries["max_connections"].wire == b"77"
    assert "rate_limit" not in entries
