"""Changes reach subscribers in revision order, even when the layer delivers them out of order.

Two writers' messages can reach a process in the other order than their
revisions (each is published after its own commit). A subscriber that got the
later one first, then lost its stream, would resume past the earlier one and
never see it. The hub holds a change that arrives ahead of a gap until the gap
closes, so the highest revision a subscriber holds is always a safe resume point.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from datastream_app.changes import Entry
from datastream_app.models import Revision
from datastream_app.publisher import GROUP
from tests.conftest import request, serving

pytestmark = pytest.mark.django_db(transaction=True)

# Only the layer's messages may deliver: no periodic or gap-triggered database read.
NO_RESYNC = {"RESYNC_INTERVAL": 3600.0, "GAP_GRACE": 3600.0}


def change(key: str, value: bytes, revision: int) -> Entry:
    return Entry(key=key, value_type="int", value=value, revision=revision, updated_at=datetime.now(tz=UTC))


async def test_hub__later_revision_arrives_first__subscriber_gets_the_earlier_one_first_or_with_it(demo):
    async with serving(DATASTREAM={**settings.DATASTREAM, **NO_RESYNC}) as (_, stub):
        call = stub.Subscribe(request("max_connections", "rate_limit"))
        snapshot = await call.read()
        assert set(snapshot.data) == {"max_connections", "rate_limit"}
        top = await sync_to_async(Revision.current)()
        layer = get_channel_layer()

        # What a process sees when the second writer's message overtakes the first's.
        await layer.group_send(GROUP, change("rate_limit", b"2", top + 2).to_message())
        await layer.group_send(GROUP, change("max_connections", b"1", top + 1).to_message())

        received: dict[str, int] = {}
        while "rate_limit" not in received:
            message = await call.read()
            for key, data in message.data.items():
                received[key] = data.revision
            # The later change never arrives without the earlier one.
            assert "max_connections" in received, f"revision {top + 2} delivered before {top + 1}"
        assert received == {"max_connections": top + 1, "rate_limit": top + 2}
        call.cancel()
