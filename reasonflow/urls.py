"""HTTP routes. The WebSocket route lives in notifications/routing.py."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/auth/", include("reasonflow.users.urls")),
    path("api/v1/notifications/", include("notifications.urls")),
]
