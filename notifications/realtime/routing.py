"""URL routes of the live connections: the WebSocket, and the event stream over server-sent
events (the rest of HTTP is Django's)."""

from django.urls import re_path

from notifications.realtime.consumer import NotificationConsumer
from notifications.realtime.sse import EventStreamConsumer

websocket_urlpatterns = [
    re_path(r"^api/v1/notifications/ws/?$", NotificationConsumer.as_asgi()),
]

event_stream_urlpatterns = [
    re_path(r"^api/v1/notifications/stream/?$", EventStreamConsumer.as_asgi()),
]
