"""The channel layers: channels-redis's two, adapted to this service.

The core layer waits for a free Redis connection: redis-py 8's async pool raises
MaxConnectionsError once 100 connections are out, and during a reconnect rush or a mass
disconnect that failed group_add/group_discard calls and left stale group members for a day
(BlockingConnectionPool, bounded by the host's `max_connections` and `timeout`). The pub/sub
layer keeps each socket's channel in the process: only groups go through Redis.
"""

import asyncio
import itertools
from collections.abc import Callable

from channels_redis import pubsub
from channels_redis.core import RedisChannelLayer as CoreRedisChannelLayer
from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from notifications import compat


def blocking_pool(host: dict) -> aioredis.ConnectionPool:
    """A connection pool for one `hosts` entry that waits for a free connection."""
    host = dict(host)
    if "address" not in host:
        # Sentinel or host/port entries keep channels-redis's own pool.
        host.pop("timeout", None)
        return create_pool(host)
    # A pooled connection that Redis closed (a restart, a failover) fails its next command;
    # retry it on a fresh connection instead of failing a join or a send.
    host.setdefault("retry", Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2))
    return aioredis.BlockingConnectionPool.from_url(host.pop("address"), **host)


class RedisChannelLayer(CoreRedisChannelLayer):
    """channels-redis's standard layer with a waiting connection pool."""

    def create_pool(self, index):
        return blocking_pool(self.hosts[index])


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """channels-redis's pub/sub layer, with process-local consumer channels.

    The stock layer subscribes every consumer's own channel in Redis (a SUBSCRIBE per socket,
    and an asyncio.Queue plus a waiting task per socket) although this service only ever sends
    to groups. Here a socket's channel lives in this process: `new_local_channel(deliver)`
    registers a callback, only the group's Redis channel is subscribed (once per process), and
    each group message is decoded once and handed to every local member. Channels made with
    `new_channel()` behave as in channels-redis.
    """

    def loop_layer(self) -> "_LocalChannelsLoopLayer":
        """This event loop's layer (channels-redis keeps one per loop)."""
        return compat.loop_layer(self)

    def new_local_channel(self, deliver: Callable[[dict], None]) -> str:
        """A channel of this process whose messages are passed to `deliver` (which must not
        modify them: group members share one decoded message)."""
        return self.loop_layer().new_local_channel(deliver)

    def discard_local_channel(self, channel: str) -> None:
        self.loop_layer().channels.pop(channel, None)

    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        """group_send each (group, message), in order, pipelined: one Redis round trip per
        shard instead of one per message (a publisher's backlog after a burst)."""
        await self.loop_layer().group_send_many(messages)


class _LocalChannelsLoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        compat.replace_shards(self, _LocalDeliveryShard)
        self._local_ids = itertools.count(1)

    def new_local_channel(self, deliver: Callable[[dict], None]) -> str:
        # Unique within this process is enough for a channel nobody outside it addresses.
        channel = f"{self.prefix}local.{next(self._local_ids)}"
        self.channels[channel] = deliver
        return channel

    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        by_shard: dict[pubsub.RedisSingleShardConnection, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            shard, name = compat.shard_for_group(self, group)
            data = self.channel_layer.serialize(message)
            by_shard.setdefault(shard, []).append((name, data))
        for shard, publications in by_shard.items():
            await compat.publish_many(shard, publications)

    async def send(self, channel, message):
        deliver = self.channels.get(channel)
        if callable(deliver):  # a local channel: nothing to publish
            deliver(message)
            return
        await super().send(channel, message)


class _LocalDeliveryShard(pubsub.RedisSingleShardConnection):
    def deliver_message(self, message) -> None:
        """Hand one pub/sub message to its channel's queue or to each local member's callback,
        decoding it once for all of them."""
        if message is None:
            return
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        members = layer.groups.get(name) if name not in layer.channels else (name,)
        decoded = None
        for channel in tuple(members or ()):
            sink = layer.channels.get(channel)
            if isinstance(sink, asyncio.Queue):
                sink.put_nowait(message["data"])
            elif sink is not None:
                if decoded is None:
                    decoded = layer.channel_layer.deserialize(message["data"])
                sink(decoded)


compat.use_loop_layer(RedisPubSubChannelLayer, _LocalChannelsLoopLayer)
compat.use_message_handler(_LocalDeliveryShard, _LocalDeliveryShard.deliver_message)
