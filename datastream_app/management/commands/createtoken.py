"""``manage.py createtoken NAME --grant PREFIX=rw``: issue an API token and print it once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from datastream_app.access import Grant, issue_token
from datastream_app.models import ApiToken


def parse_grant(text: str) -> Grant:
    """``PREFIX=FLAGS`` with flags r (read), w (write), s (read secrets); ``=r`` is every key."""
    prefix, sep, flags = text.rpartition("=")
    if not sep or not flags or set(flags) - set("rws"):
        raise CommandError(f"--grant {text!r}: use PREFIX=FLAGS with flags from r, w, s (e.g. app/=rw, =r)")
    return Grant(prefix, read="r" in flags or "s" in flags, write="w" in flags, secrets="s" in flags)


class Command(BaseCommand):
    """Issues a scoped API token for gRPC and REST clients."""

    help = "Creates an API token and prints it (it is stored hashed and cannot be shown again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="who or what uses the token")
        parser.add_argument(
            "--grant", action="append", default=[], help="PREFIX=FLAGS, flags r/w/s; repeatable; '=r' reads every key"
        )
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if ApiToken.objects.filter(name=options["name"]).exists():
            raise CommandError(f"a token named {options['name']!r} exists already")
        grants = [parse_grant(text) for text in options["grant"]]
        if not grants:
            raise CommandError("give at least one --grant, e.g. --grant app/=r")
        days = options["expires_in_days"]
        expires = timezone.now() + timedelta(days=days) if days else None
        _, text = issue_token(name=options["name"], grants=grants, created_by="manage.py", expires_at=expires)
        # Only the token goes to stdout, so `export DATASTREAM_TOKEN=$(manage.py createtoken ...)` works.
        self.stdout.write(text)
        self.stderr.write(
            f"token {options['name']!r} created; shown only now (it is stored hashed)."
            " The examples read it from DATASTREAM_TOKEN.",
            style_func=lambda line: line,
        )
