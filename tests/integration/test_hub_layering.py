"""The hub's place in the layers: no gRPC below rpc/, no hub below it, one hub per process."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from datastream_app.rpc.server import GrpcService

APP = Path(__file__).resolve().parents[2] / "datastream_app"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", [APP / "changes.py", APP / "publisher.py", *sorted((APP / "hub").glob("*.py"))], ids=lambda p: p.name
)
def test_layering__domain_and_hub_modules__import_no_grpc_or_protobuf(path):
    wire = {name for name in imported_modules(path) if name.split(".")[0] in {"protos", "grpc", "google"}}

    assert wire == set()


@pytest.mark.parametrize("path", sorted((APP / "stores").glob("*.py")), ids=lambda p: p.name)
def test_layering__store_modules__do_not_import_the_hub_or_rpc(path):
    upward = {name for name in imported_modules(path) if name.startswith(("datastream_app.hub", "datastream_app.rpc"))}

    assert upward == set()


@pytest.mark.django_db(transaction=True)
async def test_one_hub_per_process__second_server_in_the_process__refused_and_the_first_keeps_serving(demo):
    from protos import datastream_pb2
    from tests.conftest import request, serving

    async with serving() as (_, stub):
        second = GrpcService("127.0.0.1:0")
        with pytest.raises(RuntimeError, match="a hub is already running in this process"):
            await second.start()
        response = await stub.Sync(request("max_connections"))

    assert isinstance(response, datastream_pb2.DataResponse)
    assert response.data["max_connections"].value == b"10"
