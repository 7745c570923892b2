"""What the example clients share: the server address, the client they connect with, how they show a value."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}

# The repository's root, so `python examples/x.py` imports the client package without installing it.
ROOT = Path(__file__).resolve().parent.parent


def default_address() -> str:
    """``DATASTREAM_ADDRESS``, else ``GRPC_HOST:GRPC_PORT`` as ``make run`` reads them (127.0.0.1:50051 by default).

    A wildcard ``GRPC_HOST`` (the server listens everywhere) is reached on loopback.
    """
    explicit = os.environ.get("DATASTREAM_ADDRESS", "").strip()
    if explicit:
        return explicit
    host = os.environ.get("GRPC_HOST", "").strip()
    port = os.environ.get("GRPC_PORT", "").strip() or "50051"
    return f"{'127.0.0.1' if host in WILDCARDS else host}:{port}"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--address`` (alias ``--target``), ``--token`` and ``--ca``, with their environment defaults."""
    parser.add_argument(
        "--address",
        "--target",
        dest="address",
        default=default_address(),
        help="host:port of the gRPC server (default: DATASTREAM_ADDRESS, else 127.0.0.1:GRPC_PORT; now %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("DATASTREAM_TOKEN"), help="API token (or DATASTREAM_TOKEN)")
    parser.add_argument("--ca", default=None, help="CA certificate file: connect with TLS")


def quiet_library() -> None:
    """The examples print their own line for each retry: the client library's warnings would repeat them."""
    logging.getLogger("datastream_client").setLevel(logging.ERROR)


def show(key: str, value: Any, value_type: str, revision: int) -> str:
    """One line per value: key = value (type) rev N, the value in its wire text (bytes: their length)."""
    from datastream_client import codec

    kind = codec.parse_value_type(value_type)
    text = f"<{len(value)} bytes>" if kind is codec.ValueType.BYTES else codec.encode_wire(kind, value).decode()
    return f"{key} = {text} ({value_type}) rev {revision}"


UNREACHABLE_HINT = (
    "is the server running there? `make run` serves gRPC on 127.0.0.1:$GRPC_PORT (50051 when unset);"
    " give this client the same GRPC_PORT, or DATASTREAM_ADDRESS / --address"
)
