"""Shared fixtures: a file-backed test database, demo settings, a real gRPC server on port 0."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.test.utils import override_settings

from datastream_app.models import Setting
from datastream_app.rpc.server import GrpcService
from protos import datastream_pb2, datastream_pb2_grpc

DEMO = [
    ("max_connections", "int", b"10"),
    ("rate_limit", "int", b"1000"),
    ("debug_enabled", "bool", b"false"),
    ("ratio", "float", b"0.5"),
    ("greeting", "string", b"hello"),
    ("limits", "json", b'{"a":1}'),
    ("blob", "bytes", b"\x00\x01\xff"),
]


# The production profile runs production settings, which redirect plain HTTP
# to HTTPS as the TLS proxy in front would. Test clients talk to the
# application directly, so they get the views as if through that proxy;
# subprocesses (manage.py check --deploy) still see the real setting.
if settings.SECURE_SSL_REDIRECT:
    override_settings(SECURE_SSL_REDIRECT=False).enable()

# Every connection any thread opened: worker threads (the database executor,
# asgiref's sync thread) keep theirs open, and PostgreSQL refuses to drop a
# test database while another session uses it.
_opened: weakref.WeakSet[BaseDatabaseWrapper] = weakref.WeakSet()


def _remember_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    _opened.add(connection)


connection_created.connect(_remember_connection, dispatch_uid="tests.conftest.remember_connection")


def close_connections_of_all_threads() -> None:
    """Close every database connection the test process opened, in whatever thread."""
    for wrapper in list(_opened):
        if wrapper.connection is None:
            continue
        # Closing from another thread is what Django's thread-sharing API permits.
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        finally:
            wrapper.dec_thread_sharing()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test databases, dropped only after every thread's connection is closed."""
    yield
    close_connections_of_all_threads()


def make_settings() -> dict[str, Setting]:
    """Create one setting of every type; return them by key."""
    return {key: Setting.objects.create(key=key, value_type=kind, value=value) for key, kind, value in DEMO}


@pytest.fixture
def demo(transactional_db: Any) -> dict[str, Setting]:
    """One setting of every type in a transactional test database."""
    return make_settings()


def _close_thread_connections() -> None:
    connections.close_all()


@contextlib.asynccontextmanager
async def _running(**overrides: Any) -> AsyncIterator[GrpcService]:
    """A started GrpcService on a free loopback port under ``overrides`` of the settings, stopped afterwards."""
    with override_settings(**overrides) if overrides else contextlib.nullcontext():
        service = GrpcService("127.0.0.1:0")
        await service.start()
        try:
            yield service
        finally:
            await service.stop(grace=1.0)
            await sync_to_async(_close_thread_connections, thread_sensitive=False)()


@contextlib.asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[tuple[GrpcService, datastream_pb2_grpc.DataServiceStub]]:
    """A real gRPC server and a stub on a channel to it, with ``overrides`` of the settings (``override_settings``).

    The settings stay overridden until the server has stopped, so the test body
    sees what the server was started with.
    """
    async with _running(**overrides) as service, grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
        yield service, datastream_pb2_grpc.DataServiceStub(chan)


@pytest.fixture
async def grpc_service(demo: dict[str, Setting]) -> AsyncIterator[GrpcService]:
    """A real gRPC server with its hub, on a free loopback port, stopped afterwards."""
    async with _running() as service:
        yield service


@pytest.fixture
async def channel(grpc_service: GrpcService) -> AsyncIterator[grpc.aio.Channel]:
    """An aio channel to the test server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_service.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> datastream_pb2_grpc.DataServiceStub:
    """A DataService stub on the test channel."""
    return datastream_pb2_grpc.DataServiceStub(channel)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def request(*keys: str) -> datastream_pb2.DataRequest:
    """A DataRequest for ``keys``."""
    return datastream_pb2.DataRequest(keys=list(keys))
