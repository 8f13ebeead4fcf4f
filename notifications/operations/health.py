"""Readiness: can this process reach its database and its channel layer, and how fast."""

import asyncio
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import create_pool, decode_hosts
from django.conf import settings
from django.db import connection
from redis import asyncio as aioredis


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict:
        result = {"ok": self.ok, "latency_ms": self.latency_ms}
        if self.error:
            result["error"] = self.error
        return result


def _database_roundtrip() -> None:
    # Run through database_sync_to_async: a connection broken by a database restart is
    # replaced first, as a request would get.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _channel_layer_roundtrip() -> None:
    layer = get_channel_layer()
    if hasattr(layer, "ring_size") and hasattr(layer, "connection"):
        # channels-redis: every shard must answer, since groups hash across all of them.
        for index in range(layer.ring_size):
            await layer.connection(index).ping()
        return
    if isinstance(layer, RedisPubSubChannelLayer):
        # A send/receive round trip would leave a subscription behind on every probe (the
        # pub/sub layer only unsubscribes a cancelled receive): ping each host instead.
        for host in decode_hosts(settings.CHANNEL_LAYERS["default"]["CONFIG"].get("hosts")):
            client = aioredis.Redis(connection_pool=create_pool(host))
            try:
                await client.ping()
            finally:
                await client.aclose(close_connection_pool=True)
        return
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "health.check"})
    await layer.receive(channel)


async def _timed(check) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.NOTIFICATIONS_READY_TIMEOUT):
            await check()
    except Exception as exc:
        # The class name only: /readyz is unauthenticated, so no hosts, paths or messages.
        error = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        return CheckResult(ok=False, latency_ms=_ms_since(started), error=error)
    return CheckResult(ok=True, latency_ms=_ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def readiness_check() -> dict[str, CheckResult]:
    """Check the database and the channel layer concurrently, each within the ready timeout."""
    database, channel_layer = await asyncio.gather(
        _timed(database_sync_to_async(_database_roundtrip)),
        _timed(_channel_layer_roundtrip),
    )
    return {"database": database, "channel_layer": channel_layer}
