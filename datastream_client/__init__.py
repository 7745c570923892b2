"""datastream's Python client: a live, typed local copy of settings, kept by one Subscribe stream.

    from datastream_client import Client

    with Client("127.0.0.1:50051", cache_path="var/settings-cache.json") as client:
        limit = client.get("max_connections")
        client.on_change(lambda change: print(change.key, change.value), keys=["max_connections"])

Needs grpcio and protobuf only. ``codec`` (wire form ↔ Python values) is the
project's one value codec; the server imports it too.
"""

from __future__ import annotations

from datastream_client.errors import (
    AccessDenied,
    DatastreamError,
    InvalidValue,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "DatastreamError",
    "InvalidValue",
    "LimitExceeded",
    "NotFound",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]

