"""The stock comparison: the minimal Channels consumer anyone would write first.

First-message JWT through simplejwt, group_add, forward group messages; a plain
AsyncJsonWebsocketConsumer with no replay, gap fill, limits or timers. It serves the same Django
HTTP app, channels-redis's own layer class with the same settings, and the same uvicorn options
as ours, so the same publisher (`publish_event`: group_send of the same message) feeds it.

Run: python -m bench.stock --host 127.0.0.1 --port P  (env as for `manage.py serve`)
"""

import argparse
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")

import django
from django.conf import settings

django.setup()
# channels-redis's own pub/sub layer: ours keeps each socket's channel in the process
# (notifications/realtime/layers.py). The core layer differs only in its connection pool.
_STOCK_BACKENDS = {
    "notifications.realtime.layers.RedisPubSubChannelLayer": (
        "channels_redis.pubsub.RedisPubSubChannelLayer"
    ),
}
_layer = settings.CHANNEL_LAYERS["default"]
_layer["BACKEND"] = _STOCK_BACKENDS.get(_layer["BACKEND"], _layer["BACKEND"])

import uvicorn  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import re_path  # noqa: E402
from rest_framework_simplejwt.authentication import JWTAuthentication  # noqa: E402

from notifications.realtime.server import server_config, tune_garbage_collector  # noqa: E402

_authentication = JWTAuthentication()


def _user_for(raw_token: str):
    validated = _authentication.get_validated_token(raw_token.encode())
    return _authentication.get_user(validated)


class StockConsumer(AsyncJsonWebsocketConsumer):
    group = None

    async def connect(self):
        await self.accept()

    async def receive_json(self, content, **kwargs):
        if self.group is not None:
            return
        try:
            user = await database_sync_to_async(_user_for)(str(content["token"]))
        except Exception:
            await self.close(code=4002)
            return
        self.group = f"events.{user.id}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"type": "connected", "user_id": str(user.id)})

    async def notification_event(self, message):
        await self.send(text_data=message["envelope"])

    async def notification_revoke(self, message):
        await self.close(code=4002)

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)


application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter([re_path(r"^api/v1/notifications/ws/?$", StockConsumer.as_asgi())]),
    }
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = server_config(host=args.host, port=args.port)
    config.app = application  # same uvicorn options as production, stock consumer
    tune_garbage_collector()  # and the same GC settings as `serve`
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
