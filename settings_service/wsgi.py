"""WSGI entry point (the ASGI one is preferred; both serve the same app)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_service.settings")

application = get_wsgi_application()
