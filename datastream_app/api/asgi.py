"""The REST body limit at the ASGI boundary: an oversized body is refused before Django receives it.

Django's ASGI handler reads a request's whole body (spooling it to a temporary
file past 2.5 MiB) before any view runs, so the view-level check in
``api/parsers.py`` alone would still take in a 10 GB upload. This wrapper
refuses a body over the limit with a 413 JSON without keeping any of it: a
body that stays within ``DRAIN_FACTOR`` times the limit is read and discarded
first, so a client still sending it can read the answer (closing on a client
mid-send makes most HTTP clients report a reset instead); a longer one (by its
``Content-Length``, or once that much has arrived) is answered at once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from datastream_app.api.exceptions import error_body
from datastream_app.api.parsers import body_limit, body_too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/api/"
# How much of a refused body is read (and thrown away) so the client gets the answer.
DRAIN_FACTOR = 4


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _drain(receive: Receive, received: int, cap: int) -> None:
    """Read and discard the rest of the body while it stays within ``cap`` bytes in all."""
    while received <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(send: Send, size: str) -> None:
    body = json.dumps(error_body(body_too_large(size))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Wraps the ASGI application: bodies under ``/api/`` longer than the REST body limit get a 413 JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, unless its body is too long for the REST API."""
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = body_limit()
        cap = DRAIN_FACTOR * limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= cap:
                await _drain(receive, 0, cap)
            await _refuse(send, str(declared))
            return
        received = 0
        over = False

        async def bounded() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django then treats the request as abandoned and sends nothing;
                    # the refusal below is the only response.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, bounded, send)
        if over:
            await _drain(receive, received, cap)
            await _refuse(send, f"over {limit}")
