"""``manage.py installsqltrigger <alias>``: the NOTIFY trigger that makes a PostgreSQL table store react at once."""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from datastream_app.conf import datastream_settings
from datastream_app.stores.sql import TRIGGER_NAME, SQLStore


class Command(BaseCommand):
    """Installs (or prints, or drops) the trigger that sends pg_notify(channel, key) on every change of the table."""

    help = (
        "Installs on the table of the SQL store ALIAS an AFTER INSERT OR UPDATE OR DELETE (and TRUNCATE) trigger "
        "that NOTIFYs the store's channel, so changes by other programs reach subscribers at once. Idempotent. "
        "SQLite stores need no trigger."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("alias", help='the store\'s name in DATASTREAM["STORES"]')
        parser.add_argument("--print", action="store_true", dest="print_only", help="print the SQL, change nothing")
        parser.add_argument("--drop", action="store_true", help="remove the trigger and its function instead")

    def handle(self, *args: Any, **options: Any) -> None:
        alias: str = options["alias"]
        store = self._store(alias)
        try:
            if store.engine_name != "postgresql":
                self.stdout.write(
                    f"store {alias!r} uses SQLite: changes are noticed through PRAGMA data_version "
                    f"(checked a few times a second); no trigger needed."
                )
                return
            drop: bool = options["drop"]
            if options["print_only"]:
                self.stdout.write(store.trigger_sql(drop=drop), ending="")
                return
            store.install_trigger(drop=drop)
        except psycopg.Error as exc:
            raise CommandError(f"store {alias!r}: {store.describe()}: {exc}") from exc
        finally:
            store.close()
        if drop:
            self.stdout.write(f"removed trigger {TRIGGER_NAME!r} from {store.describe()}")
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"installed trigger {TRIGGER_NAME!r} on {store.describe()}: "
                    f"every change notifies channel {store.channel!r}"
                )
            )

    def _store(self, alias: str) -> SQLStore:
        # Only this store is built: the others may be unreachable or slow to start.
        config = datastream_settings.STORES.get(alias)
        if config is None:
            known = ", ".join(sorted(datastream_settings.STORES)) or "none"
            raise CommandError(f'no store {alias!r} in DATASTREAM["STORES"] (stores: {known})')
        try:
            backend = import_string(config.get("BACKEND", ""))
        except ImportError as exc:
            raise CommandError(f"store {alias!r}: backend cannot be imported: {exc}") from exc
        if not (isinstance(backend, type) and issubclass(backend, SQLStore)):
            raise CommandError(f"store {alias!r} is not a SQL store ({config.get('BACKEND')})")
        try:
            store = backend(alias=alias, prefix=config.get("PREFIX", ""), **config.get("OPTIONS", {}))
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        return store
