"""App config: connects the signal receivers and registers system checks."""

from __future__ import annotations

from django.apps import AppConfig


class DatastreamConfig(AppConfig):
    """The datastream settings app."""

    name = "datastream_app"
    verbose_name = "datastream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from datastream_app import checks, signals  # noqa: F401  (registers receivers and checks)
