"""What REST (api/) and gRPC (rpc/) do the same way at the edge of the service.

One function each for: reading a bearer token, telling loopback from proxied
callers, building the caller's principal (the anonymous-loopback rule
included), naming the caller for the history, and turning a database outage
into ``Unavailable``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from datastream_app import access
from datastream_app.access import Principal
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import Unauthenticated, Unavailable

# Headers a reverse proxy adds: a request carrying one came from somewhere
# else than the loopback peer the server sees, so it is never anonymous.
PROXY_HEADERS = frozenset({"x-forwarded-for", "forwarded", "x-real-ip"})

AUTHENTICATION_REQUIRED = (
    "authentication required: send 'authorization: Bearer <token>' (REST also takes an admin session); "
    "anonymous access is only for loopback clients with DATASTREAM_ANONYMOUS_LOOPBACK on"
)
PROXIED_REFUSED = (
    "anonymous access refused: the request came through a proxy (it carries X-Forwarded-For, Forwarded or "
    "X-Real-IP); send 'authorization: Bearer <token>'"
)


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of an ``authorization`` value; None when there is none; Unauthenticated when malformed."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return token.strip()


def _header_name(name: str) -> str:
    # gRPC metadata keys are lower-case with dashes; Django's META keys are
    # HTTP_X_FORWARDED_FOR.
    name = name.lower().replace("_", "-")
    return name.removeprefix("http-")


def is_proxied(header_names: Iterable[str]) -> bool:
    """Whether any of ``header_names`` (HTTP headers, META keys or gRPC metadata keys) is a proxy's."""
    return any(_header_name(name) in PROXY_HEADERS for name in header_names)


@functools.lru_cache(maxsize=4096)
def client_host(address: str | None) -> str:
    """The caller's host: ``127.0.0.1`` for ``127.0.0.1`` and for the gRPC peer ``ipv4:127.0.0.1:5000``.

    IPv6 peers (``ipv6:[::1]:5000``, brackets possibly percent-encoded) give
    ``::1``; unix-socket peers and unparsable text are returned as they are.
    """
    if not address:
        return ""
    if address.startswith("ipv4:"):
        return address[5:].rsplit(":", 1)[0]
    if address.startswith("ipv6:"):
        rest = unquote(address[5:])
        if rest.startswith("["):
            return rest[1:].split("]", 1)[0]
        return rest
    return address


@functools.lru_cache(maxsize=4096)
def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (an IP, or a gRPC peer such as ``ipv4:127.0.0.1:5000``) is loopback."""
    if not address:
        return False
    if address.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(client_host(address).split("%")[0]).is_loopback
    except ValueError:
        return False


def anonymous_for(address: str | None, *, proxied: bool) -> Principal:
    """The anonymous-loopback rule: ANONYMOUS or Unauthenticated.

    Anonymous access needs DATASTREAM_ANONYMOUS_LOOPBACK on, a loopback peer,
    and no proxy header: a proxy on the same host makes every caller look
    like loopback.
    """
    if not datastream_settings.ANONYMOUS_LOOPBACK or not is_loopback(address):
        raise Unauthenticated(AUTHENTICATION_REQUIRED)
    if proxied:
        raise Unauthenticated(PROXIED_REFUSED)
    return access.ANONYMOUS


def principal(*, token: Principal | None, user: Any, address: str | None, proxied: bool) -> Principal:
    """The caller: its token's principal, else a logged-in user's, else anonymous loopback (or Unauthenticated)."""
    if token is not None:
        return token
    if user is not None and user.is_authenticated:
        return access.user_principal(user)
    return anonymous_for(address, proxied=proxied)


def actor_name(caller: Principal, address: str | None) -> str:
    """Who history records: the token or user name, else the caller's host (the same on REST and gRPC)."""
    if caller.kind in ("token", "user"):
        return caller.name
    return client_host(address)


def database_outage(exc: BaseException) -> Unavailable | None:
    """``Unavailable`` when ``exc`` says the database cannot be reached, else None."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, (OperationalError, InterfaceError)):
        return Unavailable("database unavailable; retry shortly")
    return None
