"""datastream's Python client: a live, typed local copy of settings, kept by one Subscribe stream.

    from datastream_client import Client

    with Client("127.0.0.1:50051", cache_path="var/settings-cache.json") as client:
        limit = client.get("max_connections")
        client.on_change(lambda change: print(change.key, change.value), keys=["max_connections"])

Needs grpcio and protobuf only. ``codec`` (wire form ↔ Python values) is the
project's one value codec; the server imports it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from datastream_client.aio import AsyncClient
    from datastream_client.client import Change, Client, Status

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "Change",
    "Client",
    "DatastreamError",
    "InvalidValue",
    "LimitExceeded",
    "NotFound",
    "PermissionDenied",
    "Status",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The client classes load grpc and the generated messages on first use, so
    # the server importing datastream_client.codec pulls in neither.
    if name in ("Client", "Change", "Status"):
        from datastream_client import client

        return getattr(client, name)
    if name == "AsyncClient":
        from datastream_client import aio

        return aio.AsyncClient
    raise AttributeError(f"module 'datastream_client' has no attribute {name!r}")
