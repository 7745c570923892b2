"""``manage.py bootstrap``: the demo settings and a local admin user, once."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from datastream_app.models import Setting

DEMO_SETTINGS = [
    ("max_connections", "int", b"10", "Maximum concurrent connections."),
    ("rate_limit", "int", b"1000", "Requests per second allowed."),
    ("debug_enabled", "bool", b"false", "Verbose debug output."),
    # The key of the README's token example: `createtoken my-service --grant app/=rw` reads and writes it.
    ("app/limit", "int", b"100", "Per-service limit; the README's token example (a grant on app/) uses it."),
]


class Command(BaseCommand):
    """Loads the demo settings unless they exist and creates the local admin on first run."""

    help = "Creates the demo settings and a local admin user if missing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-admin", action="store_true", help="do not create the admin user")

    def handle(self, *args: Any, **options: Any) -> None:
        for key, value_type, value, description in DEMO_SETTINGS:
            _, created = Setting.objects.get_or_create(
                key=key, defaults={"value_type": value_type, "value": value, "description": description}
            )
            if created:
                self.stdout.write(f"created demo setting {key} = {value.decode()} ({value_type})")
        if not options["no_admin"]:
            self._admin()

    def _admin(self) -> None:
        User = get_user_model()
        credentials = settings.VAR_DIR / "admin-credentials.txt"
        if User.objects.filter(username="admin").exists():
            where = f" (password in {credentials})" if credentials.exists() else ""
            self.stdout.write(f"admin user exists{where}")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        credentials.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_text(f"username: admin\npassword: {password}\n")
        credentials.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"created admin user: username admin, password {password}"))
        self.stdout.write(f"(saved to {credentials})")
