"""The client package's generated messages and the server's come from the same .proto."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from datastream_client._proto import datastream_pb2 as client_pb2
from protos import datastream_pb2 as server_pb2


def test_generated_copies__same_serialized_file_descriptor():
    assert client_pb2.DESCRIPTOR.name == server_pb2.DESCRIPTOR.name == "protos/datastream.proto"
    assert client_pb2.DESCRIPTOR.serialized_pb == server_pb2.DESCRIPTOR.serialized_pb


def test_generated_copies__match_the_proto_source_as_compiled_now(tmp_path):
    # Stale generated code (a field added to the .proto but `make protos` not run) fails here.
    from pathlib import Path

    from grpc_tools import protoc

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "descriptor.pb"
    assert (
        protoc.main(
            [
                "protoc",
                f"-I{root}",
                f"-I{protoc_include()}",
                f"--descriptor_set_out={out}",
                str(root / "protos/datastream.proto"),
            ]
        )
        == 0
    )
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in compiled.message_type:  # generated code leaves out the derived json names
        for field in [*message.field, *(f for nested in message.nested_type for f in nested.field)]:
            field.ClearField("json_name")
    generated = descriptor_pb2.FileDescriptorProto.FromString(client_pb2.DESCRIPTOR.serialized_pb)
    assert compiled == generated


def protoc_include() -> str:
    import importlib.resources

    return str(importlib.resources.files("grpc_tools") / "_proto")


def test_resume_fields__present_with_their_numbers():
    fields = {f.name: f.number for f in client_pb2.DataRequest.DESCRIPTOR.fields}
    assert fields == {"keys": 1, "since_revision": 2, "include_deletions": 3}
    assert client_pb2.Data.DESCRIPTOR.fields_by_name["deleted"].number == 6
    response = {f.name: f.number for f in client_pb2.DataResponse.DESCRIPTOR.fields}
    assert response == {"data": 1, "resumed_from": 2}
