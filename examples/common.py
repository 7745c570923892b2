"""What the example clients share: the server address, the channel (plaintext or TLS) and the token metadata."""

from __future__ import annotations

import argparse
import os

import grpc

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


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


def open_channel(target: str, ca: str | None) -> grpc.Channel:
    """A plaintext channel, or TLS when a CA certificate is given."""
    if ca is None:
        return grpc.insecure_channel(target)
    with open(ca, "rb") as handle:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=handle.read()))


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The ``authorization`` metadata for ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


UNREACHABLE_HINT = (
    "is the server running there? `make run` serves gRPC on 127.0.0.1:$GRPC_PORT (50051 when unset);"
    " give this client the same GRPC_PORT, or DATASTREAM_ADDRESS / --address"
)
