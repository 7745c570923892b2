"""Who is calling and what they may do: one model for gRPC, REST and the admin.

A Principal holds grants on key prefixes (read, write, read secrets). Tokens
carry their grants from the database; staff users get theirs from Django's
permissions; anonymous loopback clients (embedded profile) may read and write
everything but secrets; code inside the service acts as SYSTEM. Which of these
a REST or gRPC caller is, is decided in edge.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from datastream_app.conf import datastream_settings
from datastream_app.exceptions import Unauthenticated

TOKEN_PREFIX = "ds"  # noqa: S105 - the visible scheme marker of every token, not a secret


@dataclass(frozen=True, slots=True)
class Grant:
    """Rights under one key prefix ("" is every key)."""

    prefix: str
    read: bool = True
    write: bool = False
    secrets: bool = False


@dataclass(frozen=True)
class Principal:
    """A caller with its grants; the longest matching prefix decides for a key."""

    name: str
    kind: str  # "token", "user", "anonymous" or "system"
    grants: tuple[Grant, ...] = ()
    token_id: int | None = None
    max_streams: int | None = None
    expires_at: datetime | None = field(default=None, compare=False)

    def _grant(self, key: str) -> Grant | None:
        best: Grant | None = None
        for grant in self.grants:
            if key.startswith(grant.prefix) and (best is None or len(grant.prefix) > len(best.prefix)):
                best = grant
        return best

    def can_read(self, key: str) -> bool:
        """Whether the caller may read ``key``."""
        grant = self._grant(key)
        return grant is not None and grant.read

    def can_write(self, key: str) -> bool:
        """Whether the caller may change ``key``."""
        grant = self._grant(key)
        return grant is not None and grant.write

    def can_read_secret(self, key: str) -> bool:
        """Whether the caller may read ``key`` when it is a secret setting."""
        grant = self._grant(key)
        return grant is not None and grant.read and grant.secrets


SYSTEM = Principal(name="system", kind="system", grants=(Grant("", read=True, write=True, secrets=True),))
ANONYMOUS = Principal(name="anonymous", kind="anonymous", grants=(Grant("", read=True, write=True, secrets=False),))


def hash_secret(token: str) -> str:
    """The stored form of a token: tokens are random, so one SHA-256 is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def assign_secret(token: Any) -> str:
    """Give ``token`` a lookup id (once) and a new secret, unsaved; return the token text to show once."""
    if not token.lookup:
        token.lookup = secrets.token_hex(6)
    text = f"{TOKEN_PREFIX}_{token.lookup}_{secrets.token_urlsafe(32)}"
    token.secret_hash = hash_secret(text)
    return text


def issue_token(
    *, name: str, grants: list[Grant], created_by: str = "", expires_at: datetime | None = None
) -> tuple[Any, str]:
    """Create a token with ``grants``; return (ApiToken, the token text shown once)."""
    from datastream_app.models import ApiToken, TokenGrant

    token = ApiToken(name=name, created_by=created_by, expires_at=expires_at)
    text = assign_secret(token)
    token.save()
    for grant in grants:
        TokenGrant.objects.create(
            token=token,
            key_prefix=grant.prefix,
            can_read=grant.read,
            can_write=grant.write,
            can_read_secrets=grant.secrets,
        )
    return token, text


def rotate_secret(token: Any) -> str:
    """Give ``token`` a new secret (the old one stops working at once); return the new text."""
    text = assign_secret(token)
    token.save(update_fields=["secret_hash"])
    return text


def authenticate_token(text: str) -> Principal:
    """The principal of a bearer token; Unauthenticated if unknown, wrong, revoked or expired."""
    from datastream_app.models import ApiToken

    parts = text.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise Unauthenticated("malformed token")
    token = ApiToken.objects.filter(lookup=parts[1]).prefetch_related("grants").first()
    # Compare even when the row is missing, so timing does not reveal lookups.
    expected = token.secret_hash if token is not None else hash_secret("missing")
    if not hmac.compare_digest(expected, hash_secret(text)) or token is None:
        raise Unauthenticated("invalid token")
    if token.revoked_at is not None:
        raise Unauthenticated(f"token {token.name!r} was revoked")
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated(f"token {token.name!r} expired")
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        # At most once a minute: a write per request would cost more than the request.
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    grants = tuple(
        Grant(g.key_prefix, read=g.can_read, write=g.can_write, secrets=g.can_read_secrets) for g in token.grants.all()
    )
    return Principal(
        name=f"token:{token.name}",
        kind="token",
        grants=grants,
        token_id=token.pk,
        max_streams=token.max_streams,
        expires_at=token.expires_at,
    )


def invalid_tokens(token_ids: set[int]) -> set[int]:
    """Which of ``token_ids`` are revoked, expired or gone (open streams are re-checked with this)."""
    from datastream_app.models import ApiToken

    valid = ApiToken.objects.filter(pk__in=token_ids, revoked_at__isnull=True).exclude(expires_at__lte=timezone.now())
    return token_ids - set(valid.values_list("pk", flat=True))


def user_principal(user: Any) -> Principal:
    """The principal of a logged-in Django user, from its model permissions."""
    read = user.has_perm("datastream_app.view_setting")
    write = user.has_perm("datastream_app.change_setting")
    secrets_ = user.has_perm("datastream_app.view_secret_setting")
    return Principal(
        name=user.get_username(), kind="user", grants=(Grant("", read=read, write=write, secrets=secrets_),)
    )


def anonymous_notice() -> str | None:
    """The startup line saying anonymous loopback access is on, or None when it is off."""
    if not datastream_settings.ANONYMOUS_LOOPBACK:
        return None
    return (
        "anonymous read and write allowed for loopback clients (embedded profile); "
        "set DATASTREAM_ANONYMOUS_LOOPBACK=0 to require API tokens"
    )
