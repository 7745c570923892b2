"""The one domain error hierarchy; rpc/errors.py and api/exceptions.py map it to each transport."""

from __future__ import annotations


class DatastreamError(Exception):
    """Base of every error a client can be told about."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DatastreamError):
    """The request is malformed or a value does not fit its key."""

    code = "invalid_argument"


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

    def __init__(self, message: str, keys: list[str] | None = None) -> None:
        super().__init__(message)
        self.keys = keys or []


class AlreadyExists(DatastreamError):
    """A key that is being created exists already."""

    code = "already_exists"


class LimitExceeded(DatastreamError):
    """A configured limit (value size, keys per request) was exceeded."""

    code = "limit_exceeded"


class PermissionDenied(DatastreamError):
    """The caller may not do this."""

    code = "permission_denied"


class Unauthenticated(DatastreamError):
    """The caller did not prove who it is."""

    code = "unauthenticated"


class Unavailable(DatastreamError):
    """A backing store or the database cannot be reached right now."""

    code = "unavailable"


class Aborted(DatastreamError):
    """A concurrent change won; retry with fresh state."""

    code = "aborted"
