"""Signal receivers: requests give their database connections back.

Changes are published by ``recording.record_change``, not by signals:
``post_save``/``post_delete`` of Setting still fire for code that listens to
them, and carry nothing the service relies on.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import request_finished
from django.db import connections
from django.dispatch import receiver


@receiver(request_finished, dispatch_uid="datastream_close_request_connections")
def close_request_connections(**kwargs: Any) -> None:
    """Close (or, pooled, give back) the database connections of the request that just finished.

    Under ASGI each request runs its sync code in a thread of its own that ends
    with the request, so a connection kept open for reuse (CONN_MAX_AGE) is
    never reused: it lingers until garbage collection. Hundreds of SQLite files
    and dozens of PostgreSQL backends stayed open under a steady REST load.
    """
    for connection in connections.all(initialized_only=True):
        connection.close()
