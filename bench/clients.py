"""Thin clients for both systems: pushes and syncs over gRPC, syncs over HTTP/1.1.

Both systems go through the same grpc.aio stack; etcd's messages are the
generated stubs shipped in PyPI ``aetcd`` (its client wrapper is not used, so
neither side pays for an extra abstraction layer).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Protocol
from urllib.parse import urlencode

import grpc
from aetcd import rpc as etcdrpc  # type: ignore[import-untyped]

from bench.common import KEY_DESCRIPTION
from protos import datastream_pb2

OURS_SUBSCRIBE = "/datastream.DataService/Subscribe"
OURS_PUSH = "/datastream.DataService/PushUpdate"
OURS_SYNC = "/datastream.DataService/Sync"
ETCD_WATCH = "/etcdserverpb.Watch/Watch"
ETCD_RANGE = "/etcdserverpb.KV/Range"


def channel_options() -> list[tuple[str, Any]]:
    """Options for a client channel that gets its own TCP connection."""
    return [
        # Without a local pool, channels with equal arguments share one connection.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]


def new_channel(target: str) -> grpc.aio.Channel:
    """A grpc.aio channel on its own connection."""
    return grpc.aio.insecure_channel(target, options=channel_options())


class Pusher(Protocol):
    """What fanout() needs: a way to set a key."""

    async def push(self, key: str, value: int) -> None:
        """Set ``key`` to the int ``value``."""

    async def close(self) -> None:
        """Close the connection."""


class KeyValueClient(Pusher, Protocol):
    """What the harness needs from either system for writes and reads."""

    async def sync(self, keys: list[str]) -> int:
        """Read the current values of ``keys``; return how many came back."""


class OursClient:
    """PushUpdate and Sync on the datastream service."""

    def __init__(self, target: str) -> None:
        self.channel = new_channel(target)
        self._push = self.channel.unary_unary(OURS_PUSH, request_serializer=None, response_deserializer=None)
        self._sync = self.channel.unary_unary(OURS_SYNC, request_serializer=None, response_deserializer=None)

    async def push(self, key: str, value: int) -> None:
        """Set ``key`` to the int ``value``."""
        request = datastream_pb2.Data(key=key, value=str(value).encode(), value_type="int")
        await self._push(request.SerializeToString(), timeout=30)

    async def sync(self, keys: list[str]) -> int:
        """Read ``keys`` with one Sync call."""
        raw = await self._sync(datastream_pb2.DataRequest(keys=keys).SerializeToString(), timeout=30)
        return len(datastream_pb2.DataResponse.FromString(raw).data)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


class EtcdClient:
    """Put, and Range (one key) or a Txn of Ranges (several keys), on etcd."""

    def __init__(self, target: str, channel: grpc.aio.Channel | None = None) -> None:
        self.channel = channel or new_channel(target)
        self.kv = etcdrpc.KVStub(self.channel)

    async def push(self, key: str, value: int) -> None:
        """Put the int ``value`` as text, as datastream stores it."""
        await self.kv.Put(etcdrpc.PutRequest(key=key.encode(), value=str(value).encode()), timeout=30)

    async def read(self, keys: list[str]) -> tuple[int, dict[str, bytes]]:
        """The revision and current values of ``keys``: what a client reads before it watches."""
        if len(keys) == 1:
            response = await self.kv.Range(etcdrpc.RangeRequest(key=keys[0].encode()), timeout=30)
            return response.header.revision, {kv.key.decode(): kv.value for kv in response.kvs}
        # Arbitrary keys are not one range: a Txn of Ranges reads them at one revision.
        ops = [etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode())) for key in keys]
        txn = await self.kv.Txn(etcdrpc.TxnRequest(success=ops), timeout=30)
        values = {kv.key.decode(): kv.value for op in txn.responses for kv in op.response_range.kvs}
        return txn.header.revision, values

    async def sync(self, keys: list[str]) -> int:
        """Read ``keys`` in one call."""
        _, values = await self.read(keys)
        return len(values)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


def new_client(system: str, target: str) -> KeyValueClient:
    """The client for ``system`` ("datastream" or "etcd")."""
    from bench.common import ETCD, OURS

    if system == OURS:
        return OursClient(target)
    if system == ETCD:
        return EtcdClient(target)
    raise ValueError(system)


class HttpClient:
    """A minimal HTTP/1.1 keep-alive client: enough to time REST calls without a client library."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.cookies: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request on the kept-alive connection; return status and body (cookies set: ``self.cookies``)."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        await self._writer.drain()
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by server")
        status = int(status_line.split()[1])
        length = -1
        chunked = False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name.strip().lower() == "set-cookie":
                cookie, _, _ = value.strip().partition(";")
                cookie_name, _, cookie_value = cookie.partition("=")
                self.cookies[cookie_name] = cookie_value
        if chunked:
            payload = b""
            while True:
                size = int((await self._reader.readline()).strip(), 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                payload += chunk[:-2]
            return status, payload
        return status, await self._reader.readexactly(length) if length >= 0 else b""

    async def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._reader = None


class RestPush:
    """datastream's REST push (``POST /api/v1/push``, as the web process serves it) on one kept-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        self.http = HttpClient(host, port)

    async def push(self, key: str, value: int) -> None:
        """Set ``key`` to the int ``value``; raise unless it answered 200."""
        body = json.dumps({"key": key, "value": value}).encode()
        try:
            status, answer = await self.http.request("POST", "/api/v1/push", body)
        except (ConnectionError, asyncio.IncompleteReadError):
            # The server closes idle keep-alive connections (uvicorn after 5 s); a push is a plain set, so
            # sending it again on a new connection is safe.
            await self.http.close()
            status, answer = await self.http.request("POST", "/api/v1/push", body)
        if status != 200:
            raise RuntimeError(f"REST push answered {status}: {answer[:200]!r}")

    async def sync(self, keys: list[str]) -> int:
        """Read ``keys`` with one REST sync."""
        status, answer = await self.http.request("GET", "/api/v1/sync?keys=" + ",".join(keys))
        if status != 200:
            raise RuntimeError(f"REST sync answered {status}: {answer[:200]!r}")
        return len(json.loads(answer)["data"])

    async def close(self) -> None:
        """Close the connection."""
        await self.http.close()


class AdminSave:
    """An operator saving a setting's change form in datastream's admin: a logged-in session, one POST per value."""

    def __init__(self, host: str, port: int, username: str, password: str, pks: dict[str, int]) -> None:
        self.http = HttpClient(host, port)
        self.username = username
        self.password = password
        # Setting primary keys by key: the change form's URL.
        self.pks = pks

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())}

    async def _post_form(self, path: str, fields: dict[str, str]) -> tuple[int, bytes]:
        body = urlencode({**fields, "csrfmiddlewaretoken": self.http.cookies.get("csrftoken", "")}).encode()
        return await self.http.request(
            "POST", path, body, content_type="application/x-www-form-urlencoded", headers=self._cookie_header()
        )

    async def login(self) -> None:
        """Log in once, as a browser would: the login page sets the CSRF cookie, the form posts the credentials."""
        await self.http.request("GET", "/admin/login/")
        status, answer = await self._post_form(
            "/admin/login/?next=/admin/", {"username": self.username, "password": self.password, "next": "/admin/"}
        )
        if status != 302 or "sessionid" not in self.http.cookies:
            raise RuntimeError(f"admin login answered {status}: {answer[:200]!r}")

    async def push(self, key: str, value: int) -> None:
        """Save the int ``value`` through ``key``'s change form; raise unless the admin redirected (saved)."""
        if "sessionid" not in self.http.cookies:
            await self.login()
        fields = {
            "value": str(value),
            "description": KEY_DESCRIPTION,
            "history-TOTAL_FORMS": "0",
            "history-INITIAL_FORMS": "0",
            "_save": "Save",
        }
        status, answer = await self._post_form(f"/admin/datastream_app/setting/{self.pks[key]}/change/", fields)
        if status != 302:
            raise RuntimeError(f"admin save answered {status} (a form error?): {answer[:300]!r}")

    async def close(self) -> None:
        """Close the connection."""
        await self.http.close()


class RestSync:
    """One system's REST read of several keys: datastream's /api/v1/sync, etcd's JSON gateway."""

    def __init__(self, system: str, host: str, port: int) -> None:
        from bench.common import OURS

        self.ours = system == OURS
        self.http = HttpClient(host, port)

    async def sync(self, keys: list[str]) -> int:
        """Read ``keys`` in one request; raise unless it answered 200."""
        if self.ours:
            status, body = await self.http.request("GET", "/api/v1/sync?keys=" + ",".join(keys))
            if status != 200:
                raise RuntimeError(f"REST sync answered {status}: {body[:200]!r}")
            return len(json.loads(body)["data"])
        encoded = [base64.b64encode(key.encode()).decode() for key in keys]
        if len(encoded) == 1:
            payload = {"key": encoded[0]}
            status, body = await self.http.request("POST", "/v3/kv/range", json.dumps(payload).encode())
            if status != 200:
                raise RuntimeError(f"etcd range answered {status}: {body[:200]!r}")
            return len(json.loads(body).get("kvs", []))
        txn = {"success": [{"request_range": {"key": key}} for key in encoded]}
        status, body = await self.http.request("POST", "/v3/kv/txn", json.dumps(txn).encode())
        if status != 200:
            raise RuntimeError(f"etcd txn answered {status}: {body[:200]!r}")
        return sum(len(r["response_range"].get("kvs", [])) for r in json.loads(body).get("responses", []))

    async def close(self) -> None:
        """Close the connection."""
        await self.http.close()
