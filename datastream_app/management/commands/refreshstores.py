"""``manage.py refreshstores [alias ...] [--now]``: make external stores read their source now."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from datastream_app.conf import datastream_settings
from datastream_app.exceptions import Unavailable
from datastream_app.publisher import publisher
from datastream_app.stores.mirrored import MirroredStore
from datastream_app.stores.watch import mirrored_stores, request_refresh


class Command(BaseCommand):
    """Asks the watching process to refresh stores, or refreshes them here with --now."""

    help = (
        "Make external stores read their source now. Without --now the process holding each store's watcher "
        "lease is asked to; with --now this process takes the lease and refreshes, printing how many keys changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Aliases (default: every external store) and --now."""
        parser.add_argument("aliases", nargs="*", metavar="alias", help="store aliases (default: every external store)")
        parser.add_argument("--now", action="store_true", help="refresh in this process instead of asking the watcher")

    def handle(self, *args: Any, **options: Any) -> None:
        """Refresh or request a refresh of each store named."""
        stores = {store.alias: store for store in mirrored_stores()}
        aliases: list[str] = list(options["aliases"]) or sorted(stores)
        for alias in aliases:
            if alias not in stores:
                kind = "is not an external store" if alias in datastream_settings.STORES else "is not configured"
                raise CommandError(f"store {alias!r} {kind}; external stores: {', '.join(sorted(stores)) or 'none'}")
        if not aliases:
            self.stdout.write("no external stores configured")
            return
        if options["now"]:
            failed = [alias for alias in aliases if not self._refresh_now(stores[alias])]
            if failed:
                raise CommandError(f"could not refresh: {', '.join(failed)}")
            return
        layer = str(settings.CHANNEL_LAYERS.get(datastream_settings.CHANNEL_LAYER, {}).get("BACKEND", ""))
        if layer.endswith("InMemoryChannelLayer"):
            self.stderr.write(
                "warning: the in-memory channel layer reaches only this process, so no serving process hears "
                "this request; use --now, or the webhook POST /api/v1/stores/<alias>/refresh"
            )
        for alias in aliases:
            request_refresh(alias)
        # This process is short-lived: wait until the requests have left.
        if not publisher.flush(timeout=10):
            raise CommandError("the channel layer did not take the refresh requests within 10 s")
        for alias in aliases:
            self.stdout.write(f"{alias}: refresh requested")

    def _refresh_now(self, store: MirroredStore) -> bool:
        if not store.acquire_lease():
            self.stderr.write(
                f"{store.alias}: another process holds the watcher lease and watches it; "
                "run without --now to ask that process instead"
            )
            return False
        try:
            changed = store.refresh()
        except Unavailable as exc:
            self.stderr.write(f"{store.alias}: {exc.message}")
            return False
        finally:
            # Hand the lease straight back, so the serving process resumes watching at once.
            store.release_lease()
            store.close()
        self.stdout.write(f"{store.alias}: {changed} key{'' if changed == 1 else 's'} changed")
        return True
