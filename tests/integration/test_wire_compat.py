"""Wire compatibility: a client built from exactly the original messages works, and generated code is current."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def _protoc(include: Path, proto: Path, out: Path, *extra: str) -> None:
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{include}", f"-I{grpc_include}", f"--python_out={out}", f"--grpc_python_out={out}", *extra]
    assert protoc.main([*args, str(proto)]) == 0


@pytest.mark.django_db(transaction=True)
async def test_original_client__every_rpc__works_against_the_server(grpc_service, tmp_path):
    _protoc(FIXTURES / "original", FIXTURES / "original" / "datastream.proto", tmp_path)

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FIXTURES / "original_client.py"),
        str(tmp_path),
        f"127.0.0.1:{grpc_service.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert ["max_connections", "int"] in result["capabilities"]
    assert result["sync"] == "10"
    assert result["sync_has_time"] is True
    assert result["first"] == "10"
    assert result["update"] == "20"
    assert result["rejected"] == "INVALID_ARGUMENT"


def test_generated_code__regenerated_from_proto__identical_to_committed(tmp_path):
    (tmp_path / "protos").mkdir()
    shutil.copy(ROOT / "protos" / "datastream.proto", tmp_path / "protos" / "datastream.proto")

    _protoc(tmp_path, tmp_path / "protos" / "datastream.proto", tmp_path, f"--pyi_out={tmp_path}")

    for name in ("datastream_pb2.py", "datastream_pb2_grpc.py", "datastream_pb2.pyi"):
        generated = (tmp_path / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert generated == committed, f"protos/{name} is out of date: run `make protos`"


def test_proto__original_fields__numbers_and_types_unchanged():
    from protos import datastream_pb2

    original = {
        "Data": {
            "key": (1, "string"),
            "value": (2, "bytes"),
            "value_type": (3, "string"),
            "updated_at": (4, "message"),
        },
        "Capability": {"key": (1, "string"), "value_type": (2, "string")},
        "ListCapabilitiesResponse": {"capabilities": (1, "message")},
        "DataRequest": {"keys": (1, "string")},
        "DataResponse": {"data": (1, "message")},
    }
    type_names = {9: "string", 12: "bytes", 11: "message"}
    for message, fields in original.items():
        descriptor = datastream_pb2.DESCRIPTOR.message_types_by_name[message]
        for name, (number, kind) in fields.items():
            field = descriptor.fields_by_name[name]
            assert (field.number, type_names[field.type]) == (number, kind), f"{message}.{name} changed"
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
        for m in datastream_pb2.DESCRIPTOR.services_by_name["DataService"].methods
    }
    assert methods == {
        "ListCapabilities": ("ListCapabilitiesRequest", "ListCapabilitiesResponse", False),
        "Sync": ("DataRequest", "DataResponse", False),
        "Subscribe": ("DataRequest", "DataResponse", True),
        "PushUpdate": ("Data", "Empty", False),
    }
