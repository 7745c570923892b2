"""The ROOT_HANDLERS_HOOK: registers this project's servicers on a server."""

from __future__ import annotations

import grpc

from datastream_app.hub import Hub
from datastream_app.rpc.servicer import DataServicer, add_data_servicer


def grpc_handlers(server: grpc.aio.Server, hub: Hub) -> None:
    """Add the DataService over the process's ``hub`` (health and reflection are added by the server itself)."""
    add_data_servicer(DataServicer(hub), server)
