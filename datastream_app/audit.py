"""Who is changing settings, and through which interface, carried in a context variable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


class Interface:
    """The interfaces a change can come through (stored in history)."""

    ADMIN = "admin"
    REST = "rest"
    GRPC = "grpc"
    CODE = "code"
    # Changed in a backing store by another program (a git commit, an S3 upload, a SQL write).
    STORE = "store"

    CHOICES = [(ADMIN, "admin"), (REST, "REST"), (GRPC, "gRPC"), (CODE, "code"), (STORE, "backing store")]


@dataclass(frozen=True)
class Actor:
    """The author of a change: a user or client name, and an interface."""

    name: str = ""
    interface: str = Interface.CODE


_current: ContextVar[Actor] = ContextVar("datastream_actor", default=Actor())  # noqa: B039 - Actor is frozen


def current_actor() -> Actor:
    """Return the actor of the code running now (``code`` when nobody said)."""
    return _current.get()


@contextmanager
def acting(name: str, interface: str) -> Iterator[Actor]:
    """Attribute every change made inside the block to ``name`` via ``interface``."""
    actor = Actor(name=name, interface=interface)
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)
