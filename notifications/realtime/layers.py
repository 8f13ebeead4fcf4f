"""The channel layers: channels-redis's two, adapted to this service.

The core layer waits for a free Redis connection: redis-py 8's async pool raises
MaxConnectionsError once 100 connections are out, and during a reconnect rush or a mass
disconnect that failed group_add/group_discard calls and left stale group members for a day
(BlockingConnectionPool, bounded by the host's `max_connections` and `timeout`). The pub/sub
layer keeps each socket's channel in the process: only groups go through Redis, and the groups
that sockets join at once are subscribed with one command.
"""

import asyncio
import itertools
import os
import threading
from collections.abc import Callable

from channels_redis import pubsub
from channels_redis.core import RedisChannelLayer as CoreRedisChannelLayer
from channels_redis.utils import create_pool
from redis import ConnectionPool
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel, SentinelConnectionPool

from notifications import compat
from notifications.realtime.waiters import settle


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


def thread_pool(host: dict) -> ConnectionPool:
    """redis-py's blocking pool for one `hosts` entry, as channels-redis's create_pool makes the
    asyncio one: a URL, a Sentinel master, or host/port."""
    host = dict(host)
    if "address" in host:
        return ConnectionPool.from_url(host.pop("address"), **host)
    master_name = host.pop("master_name", None)
    if master_name is not None:
        sentinels, sentinel_kwargs = host.pop("sentinels"), host.pop("sentinel_kwargs", None)
        sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
        return SentinelConnectionPool(master_name, sentinel, **host)
    return ConnectionPool(**host)


class ThreadPublisher:
    """PUBLISHes to one shard from threads without an event loop, over one connection kept
    between batches: a connection taken from redis-py's pool each time is first polled for
    unread data, a system call per batch. A forked child opens a connection of its own."""

    def __init__(self, host: dict) -> None:
        self.pool = thread_pool(host)
        self.connection = None
        self.pid = None
        self.lock = threading.Lock()

    def publish(self, publications: list[tuple[str, bytes]]) -> None:
        """PUBLISH each (channel, data), pipelined: one round trip for all. A connection Redis
        dropped meanwhile (a restart) is replaced and the batch sent once more; a repeat reaches
        no socket twice (streams skip event ids already sent)."""
        commands = [("PUBLISH", channel, data) for channel, data in publications]
        with self.lock:
            if self.pid != os.getpid():
                self.connection, self.pid = self.pool.make_connection(), os.getpid()
            connection = self.connection
            packed = connection.pack_commands(commands)
            for attempt in (1, 2):
                try:
                    # At once when connected. Not left to send_packed_command, which would
                    # connect to the connection's default address: a Sentinel one's master is
                    # found by connect() only.
                    connection.connect()
                    connection.send_packed_command(packed)
                    for _ in commands:
                        connection.read_response()
                    return
                except BaseException as failure:
                    connection.disconnect()
                    retry = isinstance(failure, RedisConnectionError | RedisTimeoutError)
                    if attempt == 2 or not retry:
                        raise


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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # For sends from threads with no event loop: the loop layers' shards and channel
        # names, and a blocking pool per shard; nothing connects before the first such send.
        self._thread_naming: _LocalChannelsLoopLayer | None = None
        self._thread_publishers: dict[object, ThreadPublisher] = {}
        self._thread_lock = threading.Lock()

    def loop_layer(self) -> "_LocalChannelsLoopLayer":
        """This event loop's layer (channels-redis keeps one per loop)."""
        return compat.loop_layer(self)

    def new_local_channel(self, deliver: Callable[[dict], None]) -> str:
        """A channel of this process whose messages are passed to `deliver` (which must not
        modify them: group members share one decoded message)."""
        return self.loop_layer().new_local_channel(deliver)

    def discard_local_channel(self, channel: str) -> None:
        self.loop_layer().channels.pop(channel, None)

    def group_send_many_from_thread(self, messages: list[tuple[str, dict]]) -> None:
        """group_send each (group, message), in order, from a thread with no event loop (every
        publisher's sender thread): the loop layers' shards and Redis channels over redis-py's
        blocking client, pipelined: one round trip per shard for a backlog. The publisher then
        spends no event loop turn, task or lock on a send."""
        by_shard: dict[ThreadPublisher, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            publisher, name = self._thread_route(group)
            by_shard.setdefault(publisher, []).append((name, self.serialize(message)))
        for publisher, publications in by_shard.items():
            publisher.publish(publications)

    def _thread_route(self, group: str) -> tuple[ThreadPublisher, str]:
        with self._thread_lock:
            if self._thread_naming is None:
                self._thread_naming = compat.detached_loop_layer(self, _LocalChannelsLoopLayer)
            shard, name = compat.shard_for_group(self._thread_naming, group)
            publisher = self._thread_publishers.get(shard)
            if publisher is None:
                publisher = self._thread_publishers[shard] = ThreadPublisher(shard.host)
        return publisher, name


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

    async def send(self, channel, message):
        deliver = self.channels.get(channel)
        if callable(deliver):  # a local channel: nothing to publish
            deliver(message)
            return
        await super().send(channel, message)


class _LocalDeliveryShard(pubsub.RedisSingleShardConnection):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._queued: dict[str, asyncio.Future] = {}  # channel -> its SUBSCRIBE was sent
        self._subscriber: asyncio.Task | None = None

    async def subscribe(self, channel) -> None:
        """Subscribe to `channel`, returning once the SUBSCRIBE is sent. The channels asked for
        meanwhile go together in the next command: when many users connect at once, one
        SUBSCRIBE per batch instead of one per user (each cost this process as much CPU as
        the rest of a connection's database and Redis work together)."""
        if channel in compat.subscribed(self):
            return
        waiter = self._queued.get(channel)
        if waiter is None:
            loop = asyncio.get_running_loop()
            waiter = self._queued[channel] = loop.create_future()
            if self._subscriber is None:
                self._subscriber = loop.create_task(self._subscribe_queued())
        # Shielded: a socket that goes away meanwhile must not cancel the others' send.
        await asyncio.shield(waiter)

    async def unsubscribe(self, channel) -> None:
        waiter = self._queued.pop(channel, None)
        if waiter is None:
            await super().unsubscribe(channel)
        elif not waiter.done():
            waiter.set_result(None)  # never sent: nothing to undo

    async def _subscribe_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, {}
                try:
                    await compat.subscribe_many(self, list(batch))
                except asyncio.CancelledError:
                    settle(batch.values(), cancelled=True)
                    raise
                except BaseException as failure:
                    settle(batch.values(), exception=failure)
                else:
                    settle(batch.values())
        finally:
            self._subscriber = None
            queued, self._queued = self._queued, {}
            settle(queued.values(), cancelled=True)

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
