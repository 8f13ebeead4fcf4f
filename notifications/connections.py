"""The live sockets of this server process: admission limits, group refresh, delivery watch,
graceful close.

One registry per process. It bounds unauthenticated sockets (each costs memory before anyone
is known), caps sockets per user, re-adds every member to its channel-layer group well within
`group_expiry` (so a crashed process's members expire in minutes while healthy long-lived
sockets never fall out), catches up sockets whose live messages the channel layer lost, and
closes every socket with a chosen code at shutdown.
"""

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from django.conf import settings

from notifications.db import read_from_database

if TYPE_CHECKING:
    from notifications.consumers import NotificationConsumer

logger = logging.getLogger(__name__)


class ConnectionRegistry:
    def __init__(self) -> None:
        self.pending: set[NotificationConsumer] = set()
        self.by_user: dict[object, set[NotificationConsumer]] = defaultdict(set)
        self._refresher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._emptied: asyncio.Event | None = None

    def admit(self, consumer: "NotificationConsumer") -> bool:
        """Register a socket that has not authenticated yet; False when too many are waiting."""
        if len(self.pending) >= settings.NOTIFICATIONS_MAX_PENDING:
            return False
        self.pending.add(consumer)
        return True

    def authenticate(self, consumer: "NotificationConsumer") -> bool:
        """Move a socket to its user's set; False when the user already has the maximum."""
        self.pending.discard(consumer)
        sockets = self.by_user[consumer.user_id]
        if len(sockets) >= settings.NOTIFICATIONS_MAX_CONNECTIONS_PER_USER:
            if not sockets:
                del self.by_user[consumer.user_id]
            return False
        sockets.add(consumer)
        self._ensure_refresher()
        return True

    def remove(self, consumer: "NotificationConsumer") -> None:
        self.pending.discard(consumer)
        sockets = self.by_user.get(consumer.user_id)
        if sockets is not None:
            sockets.discard(consumer)
            if not sockets:
                del self.by_user[consumer.user_id]
        if self._emptied is not None and not self.pending and not self.by_user:
            self._emptied.set()

    def count_for_user(self, user_id) -> int:
        return len(self.by_user.get(user_id, ()))

    def authenticated(self) -> list["NotificationConsumer"]:
        return [consumer for sockets in self.by_user.values() for consumer in sockets]

    def all(self) -> list["NotificationConsumer"]:
        return [*self.pending, *self.authenticated()]

    async def close_all(self, code: int) -> None:
        """Close every socket with `code` and wait until each has left (group discarded)."""
        self._emptied = asyncio.Event()
        await asyncio.gather(
            *(consumer.close_with(code) for consumer in self.all()), return_exceptions=True
        )
        if self.all():
            await self._emptied.wait()

    async def close_authenticated(self, code: int) -> None:
        """Close every authenticated socket with `code` (without waiting for them to leave)."""
        await asyncio.gather(
            *(consumer.close_with(code) for consumer in self.authenticated()),
            return_exceptions=True,
        )

    def _ensure_refresher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._refresher is None or self._refresher.done() or self._refresher.get_loop() != loop:
            self._refresher = loop.create_task(self._refresh_groups())
        if self._watcher is None or self._watcher.done() or self._watcher.get_loop() != loop:
            self._watcher = loop.create_task(self._watch_deliveries())

    async def _watch_deliveries(self) -> None:
        # The channel layer may lose a live message (pub/sub while Redis reconnects, a full
        # channel, a dropped publish). A socket fills such a gap when the next event arrives;
        # this watch covers the last event before a quiet spell. Each tick reads the newest
        # ids of all connected users (one query per 1,000 users) and has every socket that is
        # still behind an id seen a whole tick earlier catch up from the store.
        from notifications.selectors import event_latest_ids_for_users

        while True:
            await asyncio.sleep(settings.NOTIFICATIONS_CATCHUP_INTERVAL)
            try:
                user_ids = list(self.by_user)
                latest: dict = {}
                for start in range(0, len(user_ids), 1000):
                    latest |= await read_from_database(event_latest_ids_for_users)(
                        user_ids=user_ids[start : start + 1000]
                    )
                behind = []
                for consumer in self.authenticated():
                    if consumer.last_sent < consumer.watch_target:
                        behind.append(consumer)
                    consumer.watch_target = latest.get(consumer.user_id, 0)
                if behind:
                    logger.info("catching up %d socket(s) the channel layer missed", len(behind))
                    await asyncio.gather(
                        *(consumer.catch_up() for consumer in behind), return_exceptions=True
                    )
            except Exception:
                logger.warning("delivery watch failed", exc_info=True)

    async def _refresh_groups(self) -> None:
        interval = settings.NOTIFICATIONS_GROUP_REFRESH
        while True:
            await asyncio.sleep(interval)
            for consumer in self.authenticated():
                try:
                    await consumer.rejoin_group()
                except Exception:
                    logger.warning("group refresh failed for %s", consumer.group, exc_info=True)


registry = ConnectionRegistry()
