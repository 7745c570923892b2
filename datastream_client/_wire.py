"""The four DataService calls on a plain grpc channel, with the client's metadata; no generated stubs needed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

from datastream_client import __version__
from datastream_client._proto import datastream_pb2 as pb
from datastream_client.errors import PermissionDenied, from_rpc_error

SERVICE = "/datastream.DataService/"
CLIENT_HEADER = "x-datastream-client"
DEFAULT_TARGET = "127.0.0.1:50051"

# Worth retrying: the server is away, overloaded, shutting down or too slow.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


def default_client_name() -> str:
    """The program's name (``sys.argv[0]``'s base name), else ``python``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "-m") else "python"


def credentials(tls: Any) -> grpc.ChannelCredentials | None:
    """``tls``: None (plaintext), True (system roots), a CA file path, or ready grpc.ChannelCredentials."""
    if tls is None or tls is False:
        return None
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    if tls is True:
        return grpc.ssl_channel_credentials()
    with open(os.fspath(tls), "rb") as ca:
        return grpc.ssl_channel_credentials(root_certificates=ca.read())


class Connection:
    """One channel to ``target`` and the DataService calls on it, each sending the client's metadata."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: Any = None,
        client_name: str | None = None,
        reconnect_cap: float = 10.0,
    ) -> None:
        self.target = target
        self.metadata: tuple[tuple[str, str], ...] = (
            (CLIENT_HEADER, f"{client_name or default_client_name()}/{__version__}"),
        )
        if token:
            self.metadata += (("authorization", f"Bearer {token}"),)
        cap_ms = max(100, int(reconnect_cap * 1000))
        options = [
            # grpc's own reconnect backoff would otherwise grow to two minutes.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", cap_ms),
            # Notice a vanished server on an idle stream.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        creds = credentials(tls)
        if creds is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, creds, options=options)
        self._capabilities = self.channel.unary_unary(
            SERVICE + "ListCapabilities",
            request_serializer=pb.ListCapabilitiesRequest.SerializeToString,
            response_deserializer=pb.ListCapabilitiesResponse.FromString,
        )
        self._sync = self.channel.unary_unary(
            SERVICE + "Sync",
            request_serializer=pb.DataRequest.SerializeToString,
            response_deserializer=pb.DataResponse.FromString,
        )
        self._subscribe = self.channel.unary_stream(
            SERVICE + "Subscribe",
            request_serializer=pb.DataRequest.SerializeToString,
            response_deserializer=pb.DataResponse.FromString,
        )
        self._push = self.channel.unary_unary(
            SERVICE + "PushUpdate",
            request_serializer=pb.Data.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )

    def capabilities(self, timeout: float | None = 10.0) -> dict[str, str]:
        """Every key the token can read, with its value type."""
        try:
            response = self._capabilities(pb.ListCapabilitiesRequest(), timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return {c.key: c.value_type for c in response.capabilities}

    def sync(self, keys: Sequence[str] = (), timeout: float | None = 10.0) -> dict[str, pb.Data]:
        """The current ``Data`` of ``keys`` (none: every readable key)."""
        try:
            response = self._sync(pb.DataRequest(keys=list(keys)), timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return dict(response.data)

    def push(self, key: str, value: bytes, value_type: str, timeout: float | None = 10.0) -> None:
        """PushUpdate of wire ``value``; ``value_type`` empty means the key's own type."""
        try:
            self._push(pb.Data(key=key, value=value, value_type=value_type), timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def push_revision(self, key: str, value: bytes, value_type: str) -> int:
        """Push, then read the key's revision back (PushUpdate answers Empty); 0 if the token cannot read it."""
        self.push(key, value, value_type)
        try:
            synced = self.sync([key])
        except PermissionDenied:
            return 0
        return synced[key].revision if key in synced else 0

    def subscribe(self, keys: Sequence[str], since_revision: int = 0) -> Any:
        """A Subscribe call (iterate it for DataResponse messages; ``cancel()`` ends it); tombstones requested."""
        request = pb.DataRequest(keys=list(keys), since_revision=since_revision, include_deletions=True)
        return self._subscribe(request, metadata=self.metadata)

    def close(self) -> None:
        """Close the channel (ends every call on it)."""
        self.channel.close()


def messages(call: Any) -> Iterator[pb.DataResponse]:
    """The messages of a Subscribe call (typed for the reader)."""
    yield from call
