"""What the example clients share: the channel (plaintext or TLS) and the token metadata."""

from __future__ import annotations

import grpc


def open_channel(target: str, ca: str | None) -> grpc.Channel:
    """A plaintext channel, or TLS when a CA certificate is given."""
    if ca is None:
        return grpc.insecure_channel(target)
    with open(ca, "rb") as handle:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=handle.read()))


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The ``authorization`` metadata for ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
