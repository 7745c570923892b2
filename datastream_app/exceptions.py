"""The one domain error hierarchy, each class with its status on both transports.

``grpc_status`` names a ``grpc.StatusCode`` (rpc/errors.py applies it) and
``http_status`` is the HTTP status (api/exceptions.py applies it). Every class
must say both, itself or through its parent: a subclass of DatastreamError
that names neither fails at import, so no error falls through to INTERNAL/500.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DatastreamError(Exception):
    """Base of every error a client can be told about."""

    code: ClassVar[str]
    grpc_status: ClassVar[str]
    http_status: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("code", "grpc_status", "http_status") if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)}")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DatastreamError):
    """The request is malformed or a value does not fit its key."""

    code = "invalid_argument"
    grpc_status = "INVALID_ARGUMENT"
    http_status = 400


class InvalidKey(InvalidArgument):
    """A key is not a valid key name."""

    code = "invalid_key"


class InvalidValue(InvalidArgument):
    """A value does not fit its type or schema."""

    code = "invalid_value"


class TypeMismatch(InvalidArgument):
    """The request names a value type other than the key's."""

    code = "type_mismatch"


class NotFound(DatastreamError):
    """A requested key does not exist."""

    code = "not_found"
    grpc_status = "NOT_FOUND"
    http_status = 404

    def __init__(self, message: str, keys: list[str] | None = None) -> None:
        super().__init__(message)
        self.keys = keys or []


class LimitExceeded(DatastreamError):
    """A configured limit (value size, keys per request, request body) was exceeded."""

    code = "limit_exceeded"
    grpc_status = "RESOURCE_EXHAUSTED"
    http_status = 413


class Throttled(LimitExceeded):
    """A rate limit (pushes per second per token) was exceeded; retry later."""

    code = "throttled"
    http_status = 429


class PermissionDenied(DatastreamError):
    """The caller may not do this."""

    code = "permission_denied"
    grpc_status = "PERMISSION_DENIED"
    http_status = 403


class Unauthenticated(DatastreamError):
    """The caller did not prove who it is."""

    code = "unauthenticated"
    grpc_status = "UNAUTHENTICATED"
    http_status = 401


class Unavailable(DatastreamError):
    """A backing store or the database cannot be reached right now."""

    code = "unavailable"
    grpc_status = "UNAVAILABLE"
    http_status = 503


class Aborted(DatastreamError):
    """A concurrent change won; retry with fresh state."""

    code = "aborted"
    grpc_status = "ABORTED"
    http_status = 409
