"""REST authentication with the same API tokens as gRPC, and the request's principal."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from datastream_app import access, edge, limits
from datastream_app.access import Principal
from datastream_app.exceptions import LimitExceeded, Throttled


class TokenUser:
    """Stands in for ``request.user`` when a token authenticated the request."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def get_username(self) -> str:
        """The token's name as history records it."""
        return self.principal.name

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        """Tokens carry grants on key prefixes, not Django permissions."""
        return False


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``: the API tokens managed in the admin."""

    def authenticate(self, request: Request) -> tuple[TokenUser, Principal] | None:
        """The token's principal, None when no authorization header is sent, or Unauthenticated."""
        token = edge.bearer_token(get_authorization_header(request))
        if token is None:
            return None
        principal = access.authenticate_token(token)
        return TokenUser(principal), principal

    def authenticate_header(self, request: Request) -> str:
        """Makes DRF answer 401 (with this challenge) rather than 403."""
        return 'Bearer realm="datastream"'


def request_principal(request: Request) -> Principal:
    """Who is calling: a token, a logged-in user, or anonymous loopback (else Unauthenticated)."""
    return edge.principal(
        token=request.auth if isinstance(request.auth, Principal) else None,
        user=request.user,
        address=request.META.get("REMOTE_ADDR"),
        proxied=edge.is_proxied(request.headers),
    )


def actor_name(request: Request, principal: Principal) -> str:
    """The caller as history records it: the token or user name, else the client's host (as gRPC records it)."""
    return edge.actor_name(principal, request.META.get("REMOTE_ADDR"))


class TokenPushThrottle(BaseThrottle):
    """The per-token push rate shared with gRPC PushUpdate (429 naming the limit when exceeded)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        """Spend one push of the caller's token, if it is a token; Throttled naming the limit when none is left."""
        if request.method != "POST" or not isinstance(request.auth, Principal):
            return True
        try:
            limits.pushes.take(request.auth)
        except LimitExceeded as exc:
            raise Throttled(exc.message) from None
        return True


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Describes token authentication in the OpenAPI schema."""

    target_class = "datastream_app.api.auth.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """An HTTP bearer scheme."""
        return {"type": "http", "scheme": "bearer", "description": "An API token from the admin: ds_<id>_<secret>"}
