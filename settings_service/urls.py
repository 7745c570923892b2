"""URL routes: admin, the REST API and health endpoints."""

from django.contrib import admin
from django.urls import include, path

from datastream_app.api import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("datastream_app.api.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
