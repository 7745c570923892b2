"""Who may use the REST API: tokens, staff with the model permissions, or anonymous loopback clients."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from datastream_app.access import Principal
from datastream_app.api.auth import request_principal
from datastream_app.exceptions import PermissionDenied


class DatastreamAccess(BasePermission):
    """Reads need ``view_setting``, writes ``change_setting``; loopback may be anonymous (edge.anonymous_for).

    A refusal raises a domain error instead of returning False: DRF would
    answer an anonymous caller with a generic 403 and tell a logged-in one
    lacking a permission to log in.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        """True, or raise Unauthenticated (401) or PermissionDenied (403)."""
        if isinstance(request.auth, Principal):
            return True  # a token: its grants are checked per key by the services
        user = request.user
        if user is not None and user.is_authenticated:
            perm = "datastream_app.view_setting" if request.method in SAFE_METHODS else "datastream_app.change_setting"
            if user.has_perm(perm):
                return True
            raise PermissionDenied(f"user {user.get_username()!r} lacks the {perm} permission")
        request_principal(request)  # anonymous: allowed, or Unauthenticated
        return True
