"""REST routes under /api/v1/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from datastream_app.api import views, webhooks

urlpatterns = [
    path("capabilities", views.CapabilitiesView.as_view(), name="capabilities"),
    path("sync", views.SyncView.as_view(), name="sync"),
    path("push", views.PushView.as_view(), name="push"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("stores/<str:alias>/refresh", webhooks.StoreRefreshWebhook.as_view(), name="store-refresh"),
]
