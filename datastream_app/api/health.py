"""HTTP liveness and readiness endpoints with JSON bodies."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from datastream_app.conf import datastream_settings


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive."""
    return JsonResponse({"status": "alive"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def _layer_ok() -> bool:
    layer = get_channel_layer(datastream_settings.CHANNEL_LAYER)
    if layer is None:
        return False
    try:
        # A send to a throwaway group reaches the layer's backend (Redis) and
        # fails when it is down; the in-memory layer always answers.
        async_to_sync(layer.group_send)("datastream.readyz", {"type": "datastream.ping"})
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the channel layer are reachable."""
    checks = {"database": _database_ok(), "channel_layer": _layer_ok()}
    ready = all(checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
