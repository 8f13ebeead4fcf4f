"""WebSocket URL routes."""

from django.urls import re_path

from notifications.realtime.consumer import NotificationConsumer

websocket_urlpatterns = [
    re_path(r"^api/v1/notifications/ws/?$", NotificationConsumer.as_asgi()),
]
