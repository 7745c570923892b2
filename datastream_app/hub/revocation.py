"""Ends the streams of tokens revoked or expired since they subscribed."""

from __future__ import annotations

from collections.abc import Callable

from channels.db import DatabaseSyncToAsync

from datastream_app.access import invalid_tokens
from datastream_app.hub.registry import Registry
from datastream_app.hub.subscription import CloseReason, Subscription


async def end_revoked_streams(registry: Registry, unsubscribe: Callable[[Subscription], None]) -> None:
    """One query for the whole process (not one per stream); streams are found by token, not by a scan."""
    tokens = registry.tokens()
    if not tokens:
        return
    try:
        invalid = await DatabaseSyncToAsync(invalid_tokens, thread_sensitive=False)(tokens)
    except Exception:  # noqa: BLE001 - the database is down: the resync loop reports it
        return
    for token_id in invalid:
        for sub in registry.of_token(token_id):
            unsubscribe(sub)
            sub.close(CloseReason.REVOKED)
