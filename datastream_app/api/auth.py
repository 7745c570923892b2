"""REST authentication with the same API tokens as gRPC, and the request's principal."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from datastream_app import access, limits
from datastream_app.access import Principal
from datastream_app.exceptions import LimitExceeded, Unauthenticated


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
        """The token's principal, None when no bearer header is sent, or Unauthenticated."""
        header = get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        if not token.strip():
            raise Unauthenticated("authorization header must be 'Bearer <token>'")
        principal = access.authenticate_token(token.strip())
        return TokenUser(principal), principal

    def authenticate_header(self, request: Request) -> str:
        """Makes DRF answer 401 (with this challenge) rather than 403."""
        return 'Bearer realm="datastream"'


def request_principal(request: Request) -> Principal:
    """Who is calling: a token, a logged-in user, or anonymous loopback (else Unauthenticated)."""
    if isinstance(request.auth, Principal):
        return request.auth
    user = request.user
    if user is not None and user.is_authenticated:
        return access.user_principal(user)
    return access.anonymous_for(request.META.get("REMOTE_ADDR"))


class TokenPushThrottle(BaseThrottle):
    """The per-token push rate shared with gRPC PushUpdate (429 when exceeded)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        """Spend one push of the caller's token, if it is a token."""
        if request.method != "POST" or not isinstance(request.auth, Principal):
            return True
        try:
            limits.pushes.take(request.auth)
        except LimitExceeded:
            return False
        return True

    def wait(self) -> float | None:
        """Retry after a second: the bucket refills continuously."""
        return 1.0


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Describes token authentication in the OpenAPI schema."""

    target_class = "datastream_app.api.auth.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """An HTTP bearer scheme."""
        return {"type": "http", "scheme": "bearer", "description": "An API token from the admin: ds_<id>_<secret>"}
