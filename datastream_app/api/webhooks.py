"""Webhooks that make an external store read its source now (a git post-receive hook, an S3 event, ...)."""

from __future__ import annotations

import hmac
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datastream_app import edge
from datastream_app.api.serializers import ErrorSerializer
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import NotFound, Unauthenticated
from datastream_app.stores.watch import request_refresh


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
            raise NotFound(f"unknown store {alias!r}")
        secret = str((config.get("OPTIONS") or {}).get("webhook_secret") or "")
        if not secret:
            raise NotFound("webhook disabled")
        try:
            token = edge.bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        except Unauthenticated:
            token = None
        # Compared in constant time, as bytes: compare_digest refuses non-ASCII str.
        if token is None or not hmac.compare_digest(token.encode(), secret.encode()):
            raise Unauthenticated("missing or wrong webhook secret")
        request_refresh(alias)
        return Response({"store": alias, "refresh": "requested"}, status=status.HTTP_202_ACCEPTED)
