"""Presence: how many sockets each user has open, across every server process.

Each process publishes its own per-user counts (from the connection registry) with an expiry:
in Redis when the channel layer is Redis, else in the database. A killed process stops renewing
them, so its sockets drop out of every count within NOTIFICATIONS_PRESENCE_TTL seconds.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta

import redis
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from redis import asyncio as aioredis

from notifications.models import Presence
from notifications.realtime.connections import registry

logger = logging.getLogger(__name__)

# A reconnect rush changes counts thousands of times a second; one write covers them all.
DEBOUNCE_SECONDS = 0.5
REDIS_TIMEOUT = 2.0


class PresenceUnavailable(Exception):
    """The presence store (Redis) did not answer."""


def _redis_target() -> tuple[str, str] | None:
    """(url, key prefix) of the Redis channel layer's first host, or None without Redis."""
    layer = settings.CHANNEL_LAYERS.get("default", {})
    if "redis" not in layer.get("BACKEND", "").lower():
        return None
    config = layer.get("CONFIG", {})
    hosts = config.get("hosts") or [{"address": "redis://localhost:6379"}]
    host = hosts[0]
    address = host.get("address") if isinstance(host, dict) else host
    if not isinstance(address, str):
        return None  # sentinel or (host, port) entries: fall back to the database
    return address, f"{config.get('prefix', 'asgi')}:presence"


def _procs_key(prefix: str) -> str:
    return f"{prefix}:procs"


def _proc_key(prefix: str, process_id: str) -> str:
    return f"{prefix}:proc:{process_id}"


# --- reading ---------------------------------------------------------------------------------

_sync_clients: dict[str, redis.Redis] = {}


def _sync_client(url: str) -> redis.Redis:
    client = _sync_clients.get(url)
    if client is None:
        client = _sync_clients[url] = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
    return client


def presence_counts_for_users(*, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Open sockets per user across all live server processes (0 for users with none).

    Raises PresenceUnavailable when Redis presence is configured but does not answer.
    """
    user_ids = [uuid.UUID(str(user_id)) for user_id in user_ids]
    counts = dict.fromkeys(user_ids, 0)
    if not user_ids:
        return counts
    target = _redis_target()
    if target is None:
        rows = (
            Presence.objects.filter(user_id__in=user_ids, expires_at__gt=timezone.now())
            .values("user_id")
            .annotate(total=Sum("connections"))
        )
        counts.update({row["user_id"]: row["total"] for row in rows})
        return counts
    url, prefix = target
    try:
        client = _sync_client(url)
        processes = client.zrangebyscore(_procs_key(prefix), time.time(), "+inf")
        fields = [str(user_id) for user_id in user_ids]
        pipe = client.pipeline(transaction=False)
        for process_id in processes:
            pipe.hmget(_proc_key(prefix, process_id.decode()), fields)
        for values in pipe.execute():
            for user_id, value in zip(user_ids, values, strict=True):
                counts[user_id] += int(value or 0)
    except (redis.RedisError, OSError) as exc:
        raise PresenceUnavailable(str(exc)) from exc
    return counts


def presence_count_for_user(*, user_id: uuid.UUID) -> int:
    """Open sockets of one user across all live server processes."""
    return presence_counts_for_users(user_ids=[user_id])[uuid.UUID(str(user_id))]


# --- writing (one tracker per process) -------------------------------------------------------


def _write_database(process_id: str, counts: dict | None, ttl: float) -> None:
    now = timezone.now()
    expires_at = now + timedelta(seconds=ttl)
    with transaction.atomic():
        if counts is None:  # nothing changed: renew the lease only
            Presence.objects.filter(process_id=process_id).update(expires_at=expires_at)
            return
        Presence.objects.filter(process_id=process_id).delete()
        Presence.objects.bulk_create(
            Presence(process_id=process_id, user_id=user_id, connections=n, expires_at=expires_at)
            for user_id, n in counts.items()
        )
        # Rows of crashed processes: ignored by readers once expired, deleted here.
        Presence.objects.filter(expires_at__lt=now).delete()


class PresenceTracker:
    """Publishes this process's per-user socket counts: soon after a change (debounced) and
    on a heartbeat of a third of the TTL, so a live process's entries never expire."""

    def __init__(self) -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task | None = None
        self._changed: asyncio.Event | None = None
        self._published: dict[str, int] | None = None
        self._clients: dict[tuple, aioredis.Redis] = {}

    def changed(self) -> None:
        """A socket authenticated or closed on this process (called from its event loop)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._changed = asyncio.Event()
            self._published = None
            self._task = loop.create_task(self._run(), name="presence")
        self._changed.set()

    async def _run(self) -> None:
        task = asyncio.current_task()
        # Not `while True`: a client library that swallows a cancellation mid-write must not
        # keep this loop (and a shutting-down event loop) alive; cancelling() remembers it.
        while not task.cancelling():
            ttl = settings.NOTIFICATIONS_PRESENCE_TTL
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=ttl / 3)
                await asyncio.sleep(DEBOUNCE_SECONDS)
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.publish()
            except Exception:
                # Redis or the database is down: the next heartbeat tries again.
                logger.warning("presence update failed", exc_info=True)

    def _counts(self) -> dict[str, int]:
        return {str(user_id): len(sockets) for user_id, sockets in registry.by_user.items()}

    async def publish(self) -> None:
        """Write this process's current counts now (renew only, when nothing changed)."""
        counts = self._counts()
        unchanged = counts == self._published
        if unchanged and not counts:
            return
        ttl = settings.NOTIFICATIONS_PRESENCE_TTL
        target = _redis_target()
        if target is None:
            await database_sync_to_async(_write_database)(
                self.process_id, None if unchanged else counts, ttl
            )
        else:
            await self._write_redis(*target, counts, ttl)
        self._published = counts

    async def _write_redis(self, url: str, prefix: str, counts: dict, ttl: float) -> None:
        key = (url, asyncio.get_running_loop())
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = aioredis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )
        proc_key, procs_key = _proc_key(prefix, self.process_id), _procs_key(prefix)
        now = time.time()
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(proc_key)
            if counts:
                pipe.hset(proc_key, mapping=counts)
                pipe.expire(proc_key, max(1, round(ttl)))
                pipe.zadd(procs_key, {self.process_id: now + ttl})
            else:
                pipe.zrem(procs_key, self.process_id)
            pipe.zremrangebyscore(procs_key, "-inf", now)
            await pipe.execute()

    async def stop(self) -> None:
        """Stop the heartbeat and publish the final counts (at shutdown: none left)."""
        if self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            self._task.cancel()
            self._task = None
            try:
                await self.publish()
            except Exception:
                logger.warning("final presence update failed", exc_info=True)


tracker = PresenceTracker()
