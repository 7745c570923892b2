"""Request body parsing for the REST API."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from datastream_app import codec
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import InvalidValue, LimitExceeded


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but refusing deep nesting before it can exhaust the stack."""

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        """The parsed body; ParseError for malformed or too deeply nested JSON."""
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        # JSON escaping can make a legal value six times longer (\u0000), plus
        # room for the request around it; anything longer is refused unread.
        limit = datastream_settings.MAX_VALUE_BYTES * 6 + 64 * 1024
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise LimitExceeded(
                f"request body is over {limit} bytes; the value limit is {datastream_settings.MAX_VALUE_BYTES} bytes"
            )
        try:
            text = codecs.decode(raw, encoding)
            # One level for the request object around the value, whose own
            # depth the codec checks against the same limit.
            return codec.loads_json(text, max_depth=codec.JSON_MAX_DEPTH + 1)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - body is not valid {encoding}: {exc.reason}") from None
        except InvalidValue as exc:
            # DRF's parser would raise RecursionError (a 500) on deeply nested input.
            raise ParseError(f"JSON parse error - request body: {exc.message}") from None
