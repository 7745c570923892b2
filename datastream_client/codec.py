"""Value types and their encodings: wire bytes (gRPC), JSON (REST) and form text (admin).

The wire form is the UTF-8 text the original datastream clients read: int 10 is
``b"10"``, bool is ``b"true"``/``b"false"``, a float is its shortest round-trip
text, a string is its UTF-8 bytes, json is compact JSON text, bytes go as-is.
Every parser returns a canonical Python value or raises InvalidValue.

This module is the one codec of the project: the client library uses it, and the
server's ``datastream_app.codec`` adds key rules and JSON Schema checks on top of
it. It needs only the standard library.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from enum import StrEnum
from typing import Any

from datastream_client.errors import InvalidValue

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Deeper JSON than this is refused: it costs recursion and no setting needs it.
JSON_MAX_DEPTH = 64


class ValueType(StrEnum):
    """The types a setting can have; the value is the wire ``value_type`` string."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"
    JSON = "json"
    BYTES = "bytes"


VALUE_TYPES = [t.value for t in ValueType]


def parse_value_type(value_type: str) -> ValueType:
    """Return the ValueType named ``value_type`` or raise InvalidValue."""
    try:
        return ValueType(value_type)
    except ValueError:
        raise InvalidValue(f"unknown value_type {value_type!r}; expected one of {', '.join(VALUE_TYPES)}") from None


def _json_depth_ok(value: Any, limit: int = JSON_MAX_DEPTH) -> bool:
    # Counts containers only, as the bracket count in loads_json does, so a
    # value parsed from text and the same value given in Python agree.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((v, depth + 1) for v in children)
    return True


def _check_utf8(text: str) -> None:
    # A str from JSON ("\ud800") or Python may hold lone surrogates, which
    # have no UTF-8 form and would fail only later, when encoding for the wire.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue("text contains unpaired surrogates, which UTF-8 cannot encode") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_json(text: str, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Parse JSON text nesting at most ``max_depth`` levels, or raise InvalidValue; NaN and Infinity are refused."""
    # A cheap bracket count first: json.loads itself recurses and would hit
    # Python's recursion limit on hostile input before our depth check runs.
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise InvalidValue(f"json nests deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidValue(f"not valid JSON: {exc}") from None


def check_python(value_type: ValueType, value: Any) -> Any:
    """Validate a Python value for ``value_type`` and return its canonical form."""
    if value_type is ValueType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"{_shown(value)} is not an integer{_as_json_hint(value_type, value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidValue("integer is out of the signed 64-bit range")
        return value
    if value_type is ValueType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue(f"{_shown(value)} is not a finite number{_as_json_hint(value_type, value)}")
        try:
            result = float(value)
        except OverflowError:
            raise InvalidValue("number is out of the float range") from None
        if not math.isfinite(result):
            raise InvalidValue("float must be finite (NaN and infinity have no JSON form)")
        return result
    if value_type is ValueType.BOOL:
        if not isinstance(value, bool):
            raise InvalidValue(f"{_shown(value)} is not a boolean: use true or false{_as_json_hint(value_type, value)}")
        return value
    if value_type is ValueType.STRING:
        if not isinstance(value, str):
            raise InvalidValue(f"{_shown(value)} is not a string")
        _check_utf8(value)
        return value
    if value_type is ValueType.BYTES:
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidValue(f"{_shown(value)} is not bytes")
        return bytes(value)
    # JSON: anything JSON can carry, finite floats only, bounded depth. The
    # depth check comes first: json.dumps recurses and would overflow the stack.
    if not _json_depth_ok(value):
        raise InvalidValue(f"json nests deeper than {JSON_MAX_DEPTH} levels")
    try:
        _check_utf8(json.dumps(value, allow_nan=False, ensure_ascii=False))
    except TypeError:
        raise InvalidValue("value is not representable as JSON") from None
    except ValueError as exc:
        raise InvalidValue(f"value is not representable as JSON: {exc}") from None
    return value


def decode_wire(value_type: ValueType, raw: bytes) -> Any:
    """Parse wire bytes into a canonical Python value."""
    if value_type is ValueType.BYTES:
        return bytes(raw)
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValue(f"{value_type} value is not valid UTF-8") from None
    if value_type is ValueType.STRING:
        return text
    if value_type is ValueType.INT:
        stripped = text.strip()
        # [0-9], not \d: \d also matches non-ASCII digits that no other client parses.
        if not re.fullmatch(r"[+-]?[0-9]{1,20}", stripped):
            raise InvalidValue(f"{_preview(text)} is not an integer")
        return check_python(value_type, int(stripped))
    if value_type is ValueType.FLOAT:
        stripped = text.strip()
        if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", stripped):
            raise InvalidValue(f"{_preview(text)} is not a finite number")
        return check_python(value_type, float(stripped))
    if value_type is ValueType.BOOL:
        lowered = text.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        raise InvalidValue(f"{_preview(text)} is not a boolean: use true or false")
    return check_python(value_type, loads_json(text))


def encode_wire(value_type: ValueType, value: Any) -> bytes:
    """Encode a canonical Python value into its wire bytes."""
    if value_type is ValueType.BYTES:
        return bytes(value)
    if value_type is ValueType.BOOL:
        return b"true" if value else b"false"
    if value_type is ValueType.INT:
        return str(int(value)).encode()
    if value_type is ValueType.FLOAT:
        return repr(float(value)).encode()
    if value_type is ValueType.STRING:
        return str(value).encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def to_json(value_type: ValueType, value: Any) -> Any:
    """Return the JSON (REST) form of a canonical value: bytes become base64 text."""
    if value_type is ValueType.BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def from_json(value_type: ValueType, value: Any) -> Any:
    """Parse a REST JSON value (bytes as base64 text) into a canonical value."""
    if value_type is ValueType.BYTES:
        if not isinstance(value, str):
            raise InvalidValue("bytes values are sent as base64 text")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise InvalidValue("bytes value is not valid base64") from None
    return check_python(value_type, value)


def to_text(value_type: ValueType, value: Any) -> str:
    """Return the form (admin) text of a canonical value: bytes as base64, json indented."""
    if value_type is ValueType.BYTES:
        return base64.b64encode(value).decode("ascii")
    if value_type is ValueType.JSON:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return encode_wire(value_type, value).decode("utf-8")


def from_text(value_type: ValueType, text: str) -> Any:
    """Parse form (admin) text into a canonical value: bytes as base64."""
    if value_type is ValueType.BYTES:
        # Base64 tools wrap lines at 76 columns; a pasted wrapped value is still base64.
        return from_json(value_type, "".join(text.split()))
    return decode_wire(value_type, text.encode("utf-8"))


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _shown(value: Any) -> str:
    # A wrong value as the client wrote it, with no Python type names: text
    # as the wire's error messages show it ('ten'), anything else as JSON.
    if isinstance(value, str):
        return _preview(value)
    if isinstance(value, (bytes, bytearray)):
        return _preview(bytes(value).decode("utf-8", "replace"))
    try:
        return _preview(json.dumps(value, allow_nan=False, ensure_ascii=False))
    except (TypeError, ValueError):
        return "the value"


def _as_json_hint(value_type: ValueType, value: Any) -> str:
    # "10" for an int key is right on the wire but a string in JSON: say so.
    if isinstance(value, str):
        try:
            decode_wire(value_type, value.encode("utf-8"))
        except InvalidValue:
            return ""
        return f"; in JSON send {value_type} values unquoted, not as strings"
    return ""
