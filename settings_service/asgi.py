"""ASGI entry point: admin, REST and health over HTTP."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_service.settings")

django_application = get_asgi_application()

# Imported once Django is set up: REST bodies over the limit are refused before Django reads them.
from datastream_app.api.asgi import BodyLimit  # noqa: E402

application = BodyLimit(django_application)  # type: ignore[arg-type]
