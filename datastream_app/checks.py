"""System checks for configurations that would silently lose updates."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from datastream_app.conf import datastream_settings


@register()
def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """datastream.E001-E003, W001."""
    messages: list[CheckMessage] = []
    layers = getattr(settings, "CHANNEL_LAYERS", {})
    alias = datastream_settings.CHANNEL_LAYER
    if alias not in layers:
        messages.append(
            Error(
                f"CHANNEL_LAYERS has no {alias!r} layer; changes cannot be published.",
                hint="Set REDIS_URL, or configure channels.layers.InMemoryChannelLayer for one process.",
                id="datastream.E001",
            )
        )
    hook = getattr(settings, "GRPC_FRAMEWORK", {}).get("ROOT_HANDLERS_HOOK")
    if not hook:
        messages.append(
            Error(
                'GRPC_FRAMEWORK["ROOT_HANDLERS_HOOK"] is not set; the gRPC server would serve nothing.',
                hint='Use "datastream_app.rpc.handlers.grpc_handlers".',
                id="datastream.E002",
            )
        )
    stores = datastream_settings.STORES
    if not isinstance(stores, dict) or not stores:
        messages.append(Error('DATASTREAM["STORES"] must name at least one store.', id="datastream.E003"))
    backend = layers.get(alias, {}).get("BACKEND", "")
    if (
        backend.endswith("InMemoryChannelLayer")
        and not settings.DEBUG
        and "postgresql" in settings.DATABASES["default"]["ENGINE"]
    ):
        messages.append(
            Warning(
                "The in-memory channel layer reaches only streams in the same process.",
                hint="With PostgreSQL you probably run web and gRPC processes apart: set REDIS_URL.",
                id="datastream.W001",
            )
        )
    return messages
