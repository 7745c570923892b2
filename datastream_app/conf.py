"""The ``DATASTREAM`` settings object: read lazily, cached, reset under ``override_settings``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Named stores, like DATABASES: each {"BACKEND": dotted path, "PREFIX": key prefix, "OPTIONS": {...}}.
    "STORES": {"default": {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": "", "OPTIONS": {}}},
    "MAX_VALUE_BYTES": 1024 * 1024,
    "MAX_KEYS_PER_REQUEST": 10000,
    # How often each hub compares its last revision with the database and
    # resyncs; bounds staleness when the channel layer drops a message.
    "RESYNC_INTERVAL": 1.0,
    # How long the hub waits for a missing revision before it resyncs.
    "GAP_GRACE": 0.2,
    "ANONYMOUS_LOOPBACK": True,
    "MAX_STREAMS_PER_TOKEN": 1000,
    # Pushes per second per token (bursts up to twice that); 0 turns the limit off.
    "PUSH_RATE_PER_TOKEN": 50,
    "CHANNEL_LAYER": "default",
    # "uvloop" (cheaper wake-ups and callbacks for thousands of streams) or "asyncio".
    "EVENT_LOOP": "uvloop",
    # Cyclic GC thresholds for server processes (None: Python's own). Thousands
    # of long-lived streams make the default generation-0 threshold of 700
    # scan them over and over: it took 43% of the loop at 10,000 streams.
    "GC_THRESHOLDS": (100_000, 50, 1000),
}


class DatastreamSettings:
    """Attribute access to ``settings.DATASTREAM`` merged over DEFAULTS."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid datastream setting: {name!r}")
        if name not in self._cache:
            user = getattr(settings, "DATASTREAM", {}) or {}
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        """Forget cached values (called when settings change in tests)."""
        self._cache.clear()


datastream_settings = DatastreamSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "DATASTREAM":
        datastream_settings.reload()
        from datastream_app.stores import reset_stores

        reset_stores()
