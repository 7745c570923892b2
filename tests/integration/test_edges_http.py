"""The REST edge through the real ASGI app under uvicorn on a free port: proxies, body limits, 404s, 429, schema."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import uvicorn
from django.test import override_settings
from rest_framework.test import APIClient

from datastream_app.access import Grant, issue_token
from datastream_app.api.parsers import body_limit, read_bounded
from datastream_app.edge import AUTHENTICATION_REQUIRED, PROXIED_REFUSED
from datastream_app.exceptions import LimitExceeded
from datastream_app.models import Setting, SettingChange

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


@contextlib.contextmanager
def uvicorn_serving(host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """settings_service.asgi under uvicorn (as ``manage.py serve`` configures it) on a free port, in a thread."""
    from settings_service.asgi import application

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(application, lifespan="off", log_level="warning"))
    started = threading.Event()
    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        started.set()

    server.startup = startup  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "uvicorn did not start"
        yield host, port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def web(demo: Any) -> Iterator[tuple[str, int]]:
    """The HTTP app served by uvicorn on 127.0.0.1, with the demo settings."""
    with uvicorn_serving() as address:
        yield address


def call(
    address: tuple[str, int],
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection; (status, headers, body)."""
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        all_headers = {"Host": "127.0.0.1", **(headers or {})}
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, path, body=body, headers=all_headers, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def push(address: tuple[str, int], payload: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], bytes]:
    """POST /api/v1/push with a JSON body."""
    body = json.dumps(payload).encode()
    return call(address, "POST", "/api/v1/push", body, {"Content-Type": "application/json", **headers})


# Anonymous loopback behind a proxy


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        # uvicorn (trusting its loopback peer) already takes the client from X-Forwarded-For...
        ({"X-Forwarded-For": "203.0.113.7"}, AUTHENTICATION_REQUIRED),
        # ...but a loopback value, Forwarded and X-Real-IP leave it at 127.0.0.1: the header decides.
        ({"X-Forwarded-For": "127.0.0.1"}, PROXIED_REFUSED),
        ({"Forwarded": "for=203.0.113.7;proto=https"}, PROXIED_REFUSED),
        ({"X-Real-IP": "203.0.113.7"}, PROXIED_REFUSED),
    ],
    ids=["x-forwarded-for", "x-forwarded-for-loopback", "forwarded", "x-real-ip"],
)
def test_http__anonymous_through_a_proxy__401_and_nothing_changes(web, header, detail):
    before = bytes(Setting.objects.get(key="max_connections").value)

    read = call(web, "GET", "/api/v1/capabilities", headers=header)
    write = push(web, {"key": "max_connections", "value": 99}, **header)

    for status, headers, body in (read, write):
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="datastream"'
        assert json.loads(body) == {"code": "unauthenticated", "detail": detail}
    assert bytes(Setting.objects.get(key="max_connections").value) == before


def test_http__anonymous_loopback_without_proxy_headers__allowed(web):
    status, _, body = call(web, "GET", "/api/v1/capabilities")

    assert status == 200
    assert "max_connections" in [c["key"] for c in json.loads(body)["capabilities"]]


def test_http__token_through_a_proxy__allowed(web):
    _, token = issue_token(name="proxied", grants=[Grant("", read=True)])

    status, _, _ = call(
        web,
        "GET",
        "/api/v1/sync?keys=max_connections",
        headers={"X-Forwarded-For": "203.0.113.7", "Authorization": f"Bearer {token}"},
    )

    assert status == 200


# Actor identity


def test_http__anonymous_push__history_names_the_host(web):
    status, _, _ = push(web, {"key": "max_connections", "value": 31})

    assert status == 200
    change = SettingChange.objects.filter(key="max_connections").order_by("-revision").first()
    assert (change.actor, change.interface) == ("127.0.0.1", "rest")


# Body limits


def _string_body(size: int, char: str = "\u0001") -> bytes:
    # Control characters escape to six bytes each: the largest JSON form of a value.
    return json.dumps({"key": "greeting", "value": char * size}).encode()


def test_http__largest_value_grpc_accepts_in_its_longest_json_form__accepted(web):
    body = _string_body(MIB)
    assert 2.5 * MIB < len(body) <= body_limit()  # past Django's DATA_UPLOAD_MAX_MEMORY_SIZE

    status, _, response = call(web, "POST", "/api/v1/push", body, {"Content-Type": "application/json"})

    assert status == 200, response[:300]
    assert bytes(Setting.objects.get(key="greeting").value) == b"\x01" * MIB


def test_http__body_one_byte_under_and_over_the_limit__accepted_then_413_json(web):
    limit = body_limit()
    # Pad with spaces (valid JSON whitespace) to exactly limit and limit + 1 bytes.
    base = json.dumps({"key": "greeting", "value": "padded"}).encode()
    at_limit = base + b" " * (limit - len(base))
    over = at_limit + b" "

    ok = call(web, "POST", "/api/v1/push", at_limit, {"Content-Type": "application/json"})
    refused = call(web, "POST", "/api/v1/push", over, {"Content-Type": "application/json"})

    assert ok[0] == 200, ok[2][:300]
    assert refused[0] == 413
    assert refused[1]["content-type"] == "application/json"
    assert json.loads(refused[2]) == {
        "code": "limit_exceeded",
        "detail": (
            f"request body is {limit + 1} bytes; the limit is {limit} bytes "
            f"(a value of up to {MIB} bytes in its JSON form)"
        ),
    }
    assert bytes(Setting.objects.get(key="greeting").value) == b"padded"


def test_http__chunked_bodies__under_the_limit_parsed_over_it_413_json(web):
    limit = body_limit()
    small = json.dumps({"key": "greeting", "value": "chunked"}).encode()
    big = _string_body(MIB + 64 * 1024)  # over the limit, no Content-Length

    def chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    ok = call(web, "POST", "/api/v1/push", chunks(small), {"Content-Type": "application/json"})
    refused = call(web, "POST", "/api/v1/push", chunks(big), {"Content-Type": "application/json"})

    assert ok[0] == 200, ok[2][:300]
    assert bytes(Setting.objects.get(key="greeting").value) == b"chunked"
    assert refused[0] == 413
    assert json.loads(refused[2])["detail"].startswith(f"request body is over {limit} bytes; the limit is {limit}")


class CountingStream:
    """A body stream that records how much was read from it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (everything left for -1)."""
        left = self.size - self.read_bytes
        n = left if size < 0 else min(size, left)
        self.read_bytes += n
        return b" " * n


def test_read_bounded__content_length_over_the_limit__refused_without_reading():
    stream = CountingStream(10 * body_limit())

    with pytest.raises(LimitExceeded):
        read_bounded(stream, str(10 * body_limit()))

    assert stream.read_bytes == 0


def test_read_bounded__no_content_length__reads_at_most_one_byte_past_the_limit():
    stream = CountingStream(10 * body_limit())

    with pytest.raises(LimitExceeded):
        read_bounded(stream, None)

    assert stream.read_bytes == body_limit() + 1


# Paths under /api/ that name no endpoint


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v1/sync/"),
        ("POST", "/api/v1/push/"),
        ("GET", "/api/v1/capabilities/"),
        ("GET", "/api/v1"),
        ("GET", "/api/"),
        ("GET", "/api"),
        ("GET", "/api/v2/sync"),
    ],
)
def test_http__unknown_path_under_api__json_404(web, method, path):
    status, headers, body = call(web, method, path, b"{}" if method == "POST" else None)

    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"code": "not_found", "detail": f"no such endpoint: {path}"}


# 429


def test_rest__pushes_over_the_rate__429_naming_the_limit(demo):
    _, token = issue_token(name="fast", grants=[Grant("", read=True, write=True)])
    api = APIClient(REMOTE_ADDR="10.1.2.3")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    with override_settings(DATASTREAM={"PUSH_RATE_PER_TOKEN": 1}):
        responses = [api.post("/api/v1/push", {"key": "rate_limit", "value": i}, format="json") for i in range(5)]

    throttled = [r for r in responses if r.status_code == 429]
    assert throttled
    assert throttled[0].json() == {
        "code": "throttled",
        "detail": "push rate limit of 1/s per token exceeded for token:fast",
    }
    assert throttled[0]["Retry-After"] == "1"


# Schema


def test_schema__anonymous_off_and_remote__public_and_holds_no_data(demo):
    with override_settings(DATASTREAM={"ANONYMOUS_LOOPBACK": False}):
        response = APIClient(REMOTE_ADDR="203.0.113.7").get("/api/v1/schema", {"format": "json"})
        refused = APIClient(REMOTE_ADDR="203.0.113.7").get("/api/v1/capabilities")

    assert response.status_code == 200
    assert refused.status_code == 401
    text = response.content.decode()
    # The API's shape only: no key and no value of this deployment.
    for key in ("max_connections", "greeting", "blob"):
        assert key not in text
    assert "hello" not in text
    assert "/api/v1/push" in json.loads(text)["paths"]


def test_http__content_length_far_over_the_limit__413_json_before_the_body_is_sent(web):
    # Declares 10 GB and sends none of it: the answer can only come before the body.
    host, port = web
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == {
        "code": "limit_exceeded",
        "detail": (
            f"request body is 10000000000 bytes; the limit is {body_limit()} bytes "
            f"(a value of up to {MIB} bytes in its JSON form)"
        ),
    }


def test_http__chunked_body_far_over_the_limit__413_json_without_receiving_it_all(web):
    # A sender thread keeps sending chunks well past the limit; the refusal arrives before it has sent them all.
    host, port = web
    limit = body_limit()
    chunk = b" " * (256 * 1024)
    total = 20 * limit
    sent = 0
    answered = threading.Event()
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )

        def send_chunks() -> None:
            nonlocal sent
            try:
                while sent < total and not answered.is_set():
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
            except OSError:
                pass  # the server closed after answering

        sender = threading.Thread(target=send_chunks, daemon=True)
        sender.start()
        response = b""
        while not response.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            response += more
        answered.set()
        sender.join(30)
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert sent < total
    assert json.loads(response.partition(b"\r\n\r\n")[2])["code"] == "limit_exceeded"
