"""The errors the client raises: one class per gRPC status a caller may want to tell apart.

Every error carries ``code`` (the gRPC status name, e.g. ``"INVALID_ARGUMENT"``) and
``message`` (the server's reason, or the codec's, which is the same text the server
would give for the same value). ``str(error)`` is the message alone.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DatastreamError(Exception):
    """Base of every error the client raises."""

    default_code: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def describe(self) -> str:
        """``CODE: message``, as the CLI prints it."""
        return f"{self.code}: {self.message}"


class InvalidValue(DatastreamError, ValueError):
    """A value does not fit its key's type (or, said by the server, its schema or the request is malformed)."""

    default_code = "INVALID_ARGUMENT"


class NotFound(DatastreamError):
    """The server knows no such key."""

    default_code = "NOT_FOUND"


class AccessDenied(DatastreamError):
    """The server refused the caller: base of Unauthenticated and PermissionDenied. Never retried."""


class Unauthenticated(AccessDenied):
    """The token is missing, unknown, revoked or expired."""

    default_code = "UNAUTHENTICATED"


class PermissionDenied(AccessDenied):
    """The token may not read or write this key."""

    default_code = "PERMISSION_DENIED"


class LimitExceeded(DatastreamError):
    """A server limit (value size, streams or pushes per token) was reached."""

    default_code = "RESOURCE_EXHAUSTED"


class Unavailable(DatastreamError):
    """The server could not be reached (or is shutting down, or lost its database)."""

    default_code = "UNAVAILABLE"


class Aborted(DatastreamError):
    """A concurrent change won; retry with fresh state."""

    default_code = "ABORTED"


_BY_CODE: dict[str, type[DatastreamError]] = {
    cls.default_code: cls
    for cls in (InvalidValue, NotFound, Unauthenticated, PermissionDenied, LimitExceeded, Unavailable, Aborted)
}
_BY_CODE["DEADLINE_EXCEEDED"] = Unavailable


def from_rpc_error(error: Any) -> DatastreamError:
    """The client error for a ``grpc.RpcError`` (its status name and details)."""
    code = error.code()
    name = getattr(code, "name", str(code))
    details = error.details() or name
    return _BY_CODE.get(name, DatastreamError)(details, name)
