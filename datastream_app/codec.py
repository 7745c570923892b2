"""The server's value rules: the client codec plus key names and JSON Schema checks.

The value codec (wire bytes, JSON and form text ↔ Python values, per value type)
lives once, in ``datastream_client.codec``; this module re-exports it for the
server with two additions: key validation, and the optional JSON Schema a json
key may carry (``schema`` arguments; jsonschema is a server dependency only).
Every function here raises the server's InvalidValue (a DatastreamError with
its gRPC and HTTP statuses), never the client's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jsonschema
from referencing.exceptions import Unresolvable

from datastream_app.exceptions import InvalidKey, InvalidValue
from datastream_client import codec as _values
from datastream_client.codec import INT_MAX, INT_MIN, JSON_MAX_DEPTH, VALUE_TYPES, ValueType
from datastream_client.errors import InvalidValue as _ClientInvalidValue

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "JSON_MAX_DEPTH",
    "KEY_MAX_LENGTH",
    "KEY_PATTERN",
    "VALUE_TYPES",
    "ValueType",
    "check_python",
    "decode_wire",
    "encode_wire",
    "from_json",
    "from_text",
    "loads_json",
    "parse_value_type",
    "to_json",
    "to_text",
    "validate_against_schema",
    "validate_key",
    "validate_schema",
]

KEY_MAX_LENGTH = 255
KEY_PATTERN = re.compile(r"\A[A-Za-z0-9_.\-/]+\Z")

P = ParamSpec("P")
R = TypeVar("R")


def _server_errors(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` raising the server's InvalidValue where the client codec raises its own."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except _ClientInvalidValue as exc:
            raise InvalidValue(exc.message) from None

    return wrapper


parse_value_type = _server_errors(_values.parse_value_type)
loads_json = _server_errors(_values.loads_json)
encode_wire = _server_errors(_values.encode_wire)
to_json = _server_errors(_values.to_json)
to_text = _server_errors(_values.to_text)


def _with_schema(value_type: ValueType, value: Any, schema: dict[str, Any] | None) -> Any:
    # A schema applies to json values only, after the value itself was accepted.
    if schema is not None and value_type is ValueType.JSON:
        validate_against_schema(value, schema)
    return value


@_server_errors
def check_python(value_type: ValueType, value: Any, schema: dict[str, Any] | None = None) -> Any:
    """Validate a Python value for ``value_type`` (and ``schema``) and return its canonical form."""
    return _with_schema(value_type, _values.check_python(value_type, value), schema)


@_server_errors
def decode_wire(value_type: ValueType, raw: bytes, schema: dict[str, Any] | None = None) -> Any:
    """Parse wire bytes into a canonical Python value (checked against ``schema``)."""
    return _with_schema(value_type, _values.decode_wire(value_type, raw), schema)


@_server_errors
def from_json(value_type: ValueType, value: Any, schema: dict[str, Any] | None = None) -> Any:
    """Parse a REST JSON value (bytes as base64 text) into a canonical value (checked against ``schema``)."""
    return _with_schema(value_type, _values.from_json(value_type, value), schema)


@_server_errors
def from_text(value_type: ValueType, text: str, schema: dict[str, Any] | None = None) -> Any:
    """Parse form (admin) text into a canonical value (checked against ``schema``): bytes as base64."""
    return _with_schema(value_type, _values.from_text(value_type, text), schema)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid key name, else raise InvalidKey."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("key must be a non-empty string")
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidKey(f"key is longer than {KEY_MAX_LENGTH} characters")
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidKey(f"key {key!r} may contain only letters, digits and _ . - /")
    # Keys become file paths and object names in some stores: no empty, "." or
    # ".." segment may ever step outside a repository or prefix.
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidKey(f"key {key!r} has an empty, '.' or '..' path segment")
    return key


def validate_schema(schema: Any) -> None:
    """Raise InvalidValue unless ``schema`` is a valid JSON Schema."""
    if not isinstance(schema, dict):
        raise InvalidValue("JSON Schema must be an object")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidValue(f"invalid JSON Schema: {exc.message}") from None


def validate_against_schema(value: Any, schema: dict[str, Any]) -> None:
    """Raise InvalidValue naming the first violation of ``schema``."""
    cls = jsonschema.validators.validator_for(schema)
    try:
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    except Unresolvable as exc:
        # check_schema accepts a $ref it cannot follow; it fails only here.
        raise InvalidValue(f"the JSON Schema has a $ref that cannot be resolved: {exc}") from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidValue(f"value does not match the JSON Schema at {where}: {error.message}")
