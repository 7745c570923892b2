"""Request body parsing for the REST API: JSON, bounded in size and depth before it is parsed.

The body limit leaves room for the largest value gRPC accepts
(``DATASTREAM_MAX_VALUE_BYTES``) in its JSON form: escaping can make a string
six times longer (``\\u0000``), base64 makes bytes 4/3 longer. A longer body is
refused with 413 before it is read: by its Content-Length when it has one,
else (chunked) after at most limit + 1 bytes. Django's own
``DATA_UPLOAD_MAX_MEMORY_SIZE`` (an HTML 400 at 2.5 MiB) never applies here:
the body is read from the request's stream, not through ``request.body``.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import IO, Any, Protocol

from django.conf import settings
from rest_framework import parsers, renderers
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.request import Request

from datastream_app import codec
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import InvalidArgument, InvalidValue, LimitExceeded

# Room for the request object around the value.
BODY_OVERHEAD = 64 * 1024


def body_limit() -> int:
    """The largest REST body accepted: the value limit in its worst JSON form, plus the request around it."""
    value_limit: int = datastream_settings.MAX_VALUE_BYTES
    return value_limit * 6 + BODY_OVERHEAD


def body_too_large(size: str) -> LimitExceeded:
    """The error for a body of ``size`` bytes (a number, or "over N")."""
    limit = body_limit()
    return LimitExceeded(
        f"request body is {size} bytes; the limit is {limit} bytes "
        f"(a value of up to {datastream_settings.MAX_VALUE_BYTES} bytes in its JSON form)"
    )


def parse_json(raw: bytes, encoding: str) -> Any:
    """The parsed body; InvalidArgument for malformed or too deeply nested JSON."""
    try:
        text = codecs.decode(raw, encoding)
        # One level for the request object around the value, whose own
        # depth the codec checks against the same limit.
        return codec.loads_json(text, max_depth=codec.JSON_MAX_DEPTH + 1)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"JSON parse error - body is not valid {encoding}: {exc.reason}") from None
    except InvalidValue as exc:
        # DRF's parser would raise RecursionError (a 500) on deeply nested input.
        raise InvalidArgument(f"JSON parse error - request body: {exc.message}") from None


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_bounded(stream: _Readable, content_length: str | None) -> bytes:
    """The body from ``stream``: LimitExceeded unread when Content-Length is over the limit, else at most limit + 1."""
    limit = body_limit()
    try:
        declared = int(content_length) if content_length else None
    except ValueError:
        raise InvalidArgument(f"Content-Length {content_length!r} is not a number") from None
    if declared is not None and declared > limit:
        raise body_too_large(str(declared))
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise body_too_large(f"over {limit}")
    return raw


class JSONParser(parsers.BaseParser):
    """JSON request bodies, bounded in size and depth (not DRF's JSONParser, which DRF feeds ``request.body``)."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        """The parsed body; LimitExceeded when too long, InvalidArgument when malformed."""
        context = parser_context or {}
        request = context.get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        raw = read_bounded(stream, length)
        return parse_json(raw, context.get("encoding", settings.DEFAULT_CHARSET))


def json_body(request: Request) -> Any:
    """The JSON body of ``request``, chunked bodies included (DRF's ``request.data`` sees those as empty)."""
    media_type = request.content_type.split(";", 1)[0].strip().lower()
    if media_type != JSONParser.media_type:
        raise UnsupportedMediaType(request.content_type)
    http_request = request._request  # DRF's documented way to the HttpRequest
    raw = read_bounded(http_request, http_request.META.get("CONTENT_LENGTH"))
    return parse_json(raw, http_request.encoding or settings.DEFAULT_CHARSET)
