"""URL routes: admin, the REST API and health endpoints."""

from django.contrib import admin
from django.urls import include, path, re_path

from datastream_app.api import health
from datastream_app.api.exceptions import not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("datastream_app.api.urls")),
    # Anything else under /api/ (unknown paths, trailing-slash variants) is a
    # JSON 404 like the API's own, not Django's HTML page.
    re_path(r"^api(/|$)", not_found),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
