"""ASGI entry point: admin, REST and health over HTTP."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_service.settings")

application = get_asgi_application()
