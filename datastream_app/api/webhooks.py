"""Webhooks that make an external store read its source now (a git post-receive hook, an S3 event, ...)."""

from __future__ import annotations

import hmac
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datastream_app.api.serializers import ErrorSerializer
from datastream_app.conf import datastream_settings
from datastream_app.stores.watch import request_refresh


def _error(code: str, detail: str, http_status: int, headers: dict[str, str] | None = None) -> Response:
    return Response({"code": code, "detail": detail}, status=http_status, headers=headers)


class StoreRefreshWebhook(APIView):
    """POST with ``Authorization: Bearer <OPTIONS["webhook_secret"]>``: the store's watcher refreshes it now.

    The secret is the only credential: no session, no loopback exception,
    because the caller is a hook on another machine.
    """

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @extend_schema(
        request=None,
        responses={
            202: inline_serializer(
                "RefreshRequested", {"store": serializers.CharField(), "refresh": serializers.CharField()}
            ),
            401: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def post(self, request: Request, alias: str) -> Response:
        """Ask the process watching ``alias`` to refresh it."""
        config = datastream_settings.STORES.get(alias)
        if not isinstance(config, dict):
            return _error("not_found", f"unknown store {alias!r}", status.HTTP_404_NOT_FOUND)
        secret = str((config.get("OPTIONS") or {}).get("webhook_secret") or "")
        if not secret:
            return _error("not_found", "webhook disabled", status.HTTP_404_NOT_FOUND)
        scheme, _, token = str(request.META.get("HTTP_AUTHORIZATION", "")).partition(" ")
        # Compared in constant time, as bytes: compare_digest refuses non-ASCII str.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), secret.encode()):
            return _error(
                "unauthenticated",
                "missing or wrong webhook secret",
                status.HTTP_401_UNAUTHORIZED,
                {"WWW-Authenticate": 'Bearer realm="datastream"'},
            )
        request_refresh(alias)
        return Response({"store": alias, "refresh": "requested"}, status=status.HTTP_202_ACCEPTED)
