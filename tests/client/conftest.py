"""Fixtures of the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.servers import GrpcServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GrpcServer]:
    """A `manage.py grpcrunserver` subprocess with the demo settings, stopped afterwards."""
    grpc_server = GrpcServer(tmp_path)
    grpc_server.start()
    try:
        yield grpc_server
    finally:
        grpc_server.stop()
