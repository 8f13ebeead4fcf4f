"""The live sockets of this server process: admission limits, group refresh, graceful close.

One registry per process. It bounds unauthenticated sockets (each costs memory before anyone
is known), caps sockets per user, re-adds every member to its channel-layer group well within
`group_expiry` (so a crashed process's members expire in minutes while healthy long-lived
sockets never fall out), and closes every socket with a chosen code at shutdown.
"""

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from notifications.consumers import NotificationConsumer

logger = logging.getLogger(__name__)


class ConnectionRegistry:
    def __init__(self) -> None:
        self.pending: set[NotificationConsumer] = set()
        self.by_user: dict[object, set[NotificationConsumer]] = defaultdict(set)
        self._refresher: asyncio.Task | None = None
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
