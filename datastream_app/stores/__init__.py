"""The configured stores, built once from ``DATASTREAM["STORES"]`` and looked up by key prefix."""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from datastream_app.conf import datastream_settings
from datastream_app.stores.base import Capability, Store

__all__ = ["Capability", "Store", "get_stores", "reset_stores", "store_for_key"]

_lock = threading.Lock()
_stores: list[Store] | None = None


def _build() -> list[Store]:
    stores = []
    for alias, config in datastream_settings.STORES.items():
        if "BACKEND" not in config:
            raise ImproperlyConfigured(f'DATASTREAM["STORES"][{alias!r}] has no "BACKEND".')
        try:
            backend = import_string(config["BACKEND"])
        except ImportError as exc:
            raise ImproperlyConfigured(
                f'DATASTREAM["STORES"][{alias!r}]["BACKEND"] = {config["BACKEND"]!r} cannot be imported: {exc}'
            ) from exc
        try:
            stores.append(backend(alias=alias, prefix=config.get("PREFIX", ""), **config.get("OPTIONS", {})))
        except TypeError as exc:
            # An unknown or missing option: name the store rather than raise a bare TypeError.
            raise ImproperlyConfigured(
                f'DATASTREAM["STORES"][{alias!r}]["OPTIONS"] do not fit {config["BACKEND"]}: {exc}'
            ) from exc
    prefixes = [store.prefix for store in stores]
    if len(set(prefixes)) != len(prefixes):
        raise ImproperlyConfigured('Two DATASTREAM["STORES"] entries use the same PREFIX.')
    # Longest prefix first, so the most specific mount wins.
    return sorted(stores, key=lambda store: len(store.prefix), reverse=True)


def get_stores() -> list[Store]:
    """All configured stores, most specific prefix first."""
    global _stores
    if _stores is None:
        with _lock:
            if _stores is None:
                _stores = _build()
    return _stores


def store_for_key(key: str) -> Store | None:
    """The store mounted at the longest prefix of ``key``, if any."""
    for store in get_stores():
        if store.owns(key):
            return store
    return None


def reset_stores() -> None:
    """Forget the built stores (settings changed)."""
    global _stores
    with _lock:
        _stores = None
