"""WebSocket helpers for consumer tests: communicators on the real ASGI application."""

import asyncio

from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.pubsub import RedisPubSubChannelLayer

from notifications.events import EventType, sample_data
from notifications.models import Event
from notifications.publish import apublish_event, user_group_name
from reasonflow.asgi import application

WS_PATH = "/api/v1/notifications/ws"
ORIGIN = b"http://localhost"


def communicator(*, origin: bytes | None = ORIGIN, path: str = WS_PATH) -> WebsocketCommunicator:
    headers = [(b"origin", origin)] if origin is not None else []
    return WebsocketCommunicator(application, path, headers=headers)


async def open_socket(**kwargs) -> WebsocketCommunicator:
    comm = communicator(**kwargs)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    return comm


async def connect(
    token: str, *, timeout: float = 5, **first_frame
) -> tuple[WebsocketCommunicator, dict]:
    """Open a socket, authenticate, and return it with its `connected` message."""
    comm = await open_socket()
    await comm.send_json_to({"token": token, **first_frame})
    message = await comm.receive_json_from(timeout=timeout)
    assert message["type"] == "connected", message
    return comm, message


async def expect_close(comm: WebsocketCommunicator, code: int, timeout: float = 5) -> None:
    """The next output is a close with `code`; then the connection ends as a server ends it
    (websocket.disconnect) and the consumer must finish cleanly."""
    output = await comm.receive_output(timeout)
    assert output == {"type": "websocket.close", "code": code}, output
    await comm.send_input({"type": "websocket.disconnect", "code": code})
    await comm.wait(timeout)


async def receive_events(comm: WebsocketCommunicator, count: int, timeout: float = 5) -> list:
    return [await comm.receive_json_from(timeout=timeout) for _ in range(count)]


async def group_members(user_id) -> set[str]:
    """Channel names in the user's group, read from the layer itself (in-memory or Redis)."""
    layer = get_channel_layer()
    group = user_group_name(user_id)
    if isinstance(layer, RedisPubSubChannelLayer):  # membership lives in this process
        loop_layer = layer._get_layer()
        return set(loop_layer.groups.get(loop_layer._get_group_channel_name(group), ()))
    if hasattr(layer, "groups"):
        return set(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    members = await connection.zrange(layer._group_key(group), 0, -1)
    return {m.decode() if isinstance(m, bytes) else m for m in members}


async def wait_until(predicate, timeout: float = 5, interval: float = 0.02):
    """Poll an async predicate until it is truthy; return its value or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def publish(user, event_type=EventType.DRAFT_READY) -> Event:
    """Publish a sample event of `event_type` to `user` (committed, then sent to the layer)."""
    return await apublish_event(
        user_id=user.id, event_type=event_type, data=sample_data(event_type)
    )
