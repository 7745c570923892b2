"""The ROOT_HANDLERS_HOOK: registers this project's servicers on a server."""

from __future__ import annotations

import grpc

from datastream_app.rpc.servicer import DataServicer, add_data_servicer


def grpc_handlers(server: grpc.aio.Server) -> None:
    """Add the DataService (health and reflection are added by the server itself)."""
    add_data_servicer(DataServicer(), server)
