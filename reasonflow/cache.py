"""Django's Redis cache through Redis Sentinel: a connection pool for RedisCache's `pool_class`
option that asks the Sentinels for the current master."""

from redis.sentinel import Sentinel, SentinelConnectionPool


class SentinelMasterPool(SentinelConnectionPool):
    """RedisCache builds its pool with `pool_class.from_url(LOCATION, **OPTIONS)`; this one
    takes `sentinels` ([(host, port), ...]) and `service_name` from OPTIONS, and ignores the
    URL: connections go to whichever server the Sentinels name master, also after a failover.
    """

    @classmethod
    def from_url(cls, url, *, sentinels, service_name, **kwargs):
        timeouts = {
            key: kwargs[key]
            for key in ("socket_timeout", "socket_connect_timeout")
            if key in kwargs
        }
        return cls(service_name, Sentinel(sentinels, sentinel_kwargs=timeouts), **kwargs)
