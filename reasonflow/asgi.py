"""ASGI entry point: HTTP goes to Django (past the throttle gate), WebSocket to the
notification consumer (past the origin check)."""

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from notifications.origins import OriginValidator  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402
from reasonflow.users.throttles import ThrottleGate  # noqa: E402

if settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer":
    logging.getLogger("reasonflow").warning(
        "REDIS_URL is not set: using the in-memory channel layer. Only this server process can "
        "publish events; workers and management commands in other processes cannot reach its "
        "sockets (their events are stored and replayed on reconnect)."
    )

application = ProtocolTypeRouter(
    {
        "http": ThrottleGate(django_asgi_app),
        "websocket": OriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
