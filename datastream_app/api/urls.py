"""REST routes under /api/v1/; any other path under /api/ is a JSON 404 (settings_service/urls.py)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny

from datastream_app.api import views, webhooks

urlpatterns = [
    path("capabilities", views.CapabilitiesView.as_view(), name="capabilities"),
    path("sync", views.SyncView.as_view(), name="sync"),
    path("push", views.PushView.as_view(), name="push"),
    # Public on purpose (docs/security.md): the schema describes the API's
    # shape, the same for every deployment, and holds no key or value.
    path("schema", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path("stores/<str:alias>/refresh", webhooks.StoreRefreshWebhook.as_view(), name="store-refresh"),
]
