"""The client resumes from the revision it holds: after grpcrunserver is SIGKILLed and restarted, only what changed.

What the server sent is read from the client's public ``last_snapshot`` (the
first message of its current stream) and, independently, with a raw stub
asking from the same revision.
"""

from __future__ import annotations

import threading

import grpc

from datastream_client import Client
from datastream_client.client import Change, State
from protos import datastream_pb2, datastream_pb2_grpc
from tests.client.servers import eventually

WHILE_DOWN = (
    "from datastream_app import services; from datastream_app.models import Setting; "
    "services.delete_setting(setting=Setting.objects.get(key='debug_enabled')); "
    "services.push(key='rate_limit', value=2000, encoding='python')"
)


def test_sigkill_restart__both_clients_resume_with_only_the_changed_and_deleted_keys(server):
    every = Client(server.target, backoff_cap=0.3)
    named = Client(server.target, keys=["rate_limit", "max_connections", "debug_enabled"], backoff_cap=0.3)
    every.start(timeout=20)
    named.start(timeout=20)
    try:
        total = len(every)
        assert every.last_snapshot is not None and every.last_snapshot.resumed_from == 0
        assert every.last_snapshot.entries == total > 3
        assert named.last_snapshot is not None and named.last_snapshot.entries == 3
        held = every.revision
        assert named.revision <= held
        named_held = named.revision
        changes: list[Change] = []
        both = threading.Event()

        def on_change(change: Change) -> None:
            changes.append(change)
            if {c.key for c in changes} == {"rate_limit", "debug_enabled"}:
                both.set()

        every.on_change(on_change)

        server.kill()
        eventually(lambda: every.status.state is State.RECONNECTING, "client reconnecting")
        server.manage("shell", "-c", WHILE_DOWN)
        server.start()
        eventually(lambda: every.status.state is State.LIVE, "every-key client live again")
        eventually(lambda: named.status.state is State.LIVE, "named-keys client live again")

        # The reconnects' first messages: the two keys that changed, nothing else.
        assert every.last_snapshot.resumed_from == held
        assert every.last_snapshot.entries == 2
        assert named.last_snapshot.resumed_from == named_held
        assert named.last_snapshot.entries == 2
        assert both.wait(10)
        assert sorted((c.key, c.value, c.deleted) for c in changes) == [
            ("debug_enabled", None, True),
            ("rate_limit", 2000, False),
        ]
        for client in (every, named):
            assert "debug_enabled" not in client
            assert client.get("rate_limit") == 2000
        assert len(every) == total - 1

        # A raw stub asking from the same revision gets exactly that too.
        with grpc.insecure_channel(server.target) as channel:
            stub = datastream_pb2_grpc.DataServiceStub(channel)
            request = datastream_pb2.DataRequest(since_revision=held, include_deletions=True)
            stream = stub.Subscribe(request, timeout=20)
            first = next(stream)
            stream.cancel()
            synced = stub.Sync(request, timeout=20)
        for message in (first, synced):
            assert message.resumed_from == held
            deleted = {key: data.deleted for key, data in message.data.items()}
            assert deleted == {"rate_limit": False, "debug_enabled": True}

        # Converge on a push.
        revision = every.set("max_connections", 42)
        named.wait_for(revision, timeout=20)
        assert named.get("max_connections") == every.get("max_connections") == 42
        assert {k: v for k, v in every.items() if k in named} == dict(named.items())
    finally:
        every.close()
        named.close()
