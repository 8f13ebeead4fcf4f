"""HTTP routes. The WebSocket route lives in notifications/realtime/routing.py."""

from django.contrib import admin
from django.contrib.staticfiles.views import serve as static_serve
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from notifications.operations.views import healthz, metrics, readyz
from reasonflow.console.views import console, favicon

urlpatterns = [
    path("", console, name="console"),
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/auth/", include("reasonflow.users.urls")),
    path("api/v1/notifications/", include("notifications.urls")),
    path("api/v1/", include("emails.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    # No OPTIONS metadata: the docs page renders only through its HTML template, and DRF's
    # metadata response has none (a 500); OPTIONS is 405 instead.
    path(
        "api/v1/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", metadata_class=None),
        name="api-docs",
    ),
    # The ASGI server serves no files: the console's script and CSS (and the admin's) come from
    # the apps' static directories through staticfiles' own view, whatever DEBUG says.
    re_path(r"^static/(?P<path>.*)$", static_serve, {"insecure": True}),
]
