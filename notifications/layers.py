"""Channel layers configured for redis-py 8.

redis-py 8's async pool raises MaxConnectionsError once 100 connections are out; during a
reconnect rush or a mass disconnect that failed group_add/group_discard calls and left stale
group members for a day. These layers wait for a free connection instead (BlockingConnectionPool,
bounded by the host's `max_connections` and `timeout`).
"""

from channels_redis.core import RedisChannelLayer as CoreRedisChannelLayer
from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff


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
