"""The live sockets of this server process: admission limits, group refresh, delivery watch,
graceful close.

One registry per process. It bounds unauthenticated sockets (each costs memory before anyone
is known) per process and per client address, limits new sockets per client address, caps
sockets per user, re-adds every member to its channel-layer group well within `group_expiry`
(so a crashed process's members expire in minutes while healthy long-lived sockets never fall
out), catches up sockets whose live messages the channel layer lost, closes sockets whose
token a change in any process revoked, and closes every socket with a chosen code at shutdown.
"""

import asyncio
import logging
import time
from collections import defaultdict
from typing import Protocol

from django.conf import settings

from notifications.realtime.auth import claims_pass
from notifications.realtime.database import read_from_database
from notifications.realtime.selectors import users_token_states_with_last_event_ids
from reasonflow.addresses import client_address

logger = logging.getLogger(__name__)

# Why admit() refused a socket (also the label values of notify_connections_refused).
REFUSED_RATE = "address_rate"  # the address opened too many sockets in a short time
REFUSED_ADDRESS = "address_pending"  # the address has too many unauthenticated sockets
REFUSED_PROCESS = "process_pending"  # the process has too many unauthenticated sockets

# Rate buckets of this many addresses at most. Refilled buckets are swept first (forgetting a
# full bucket changes nothing); past it, the address seen first loses its bucket: to push a
# busy one out, a client needs this many addresses active within one refill period.
MAX_TRACKED_ADDRESSES = 100_000


class _Stream(Protocol):
    last_event_id: int  # the newest event id sent
    watched_event_id: int  # the newest id the delivery watch saw at its previous tick

    async def catch_up(self) -> None: ...


class _Membership(Protocol):
    group: str | None

    async def rejoin(self) -> None: ...


class Socket(Protocol):
    """What the registry needs of a socket (consumer.NotificationConsumer is one)."""

    scope: dict  # the ASGI connection scope: the client's address
    user_id: object
    closing: bool
    claims: tuple  # auth.policy_claims() of the token in use
    stream: _Stream
    membership: _Membership

    async def close_with(self, code: int) -> None: ...
    async def revoke(self) -> None: ...


class ConnectRates:
    """A token bucket of new sockets per client address: NOTIFICATIONS_CONNECT_RATE_PER_IP a
    second, bursts of NOTIFICATIONS_CONNECT_BURST_PER_IP. Memory stays bounded: buckets that
    have refilled are forgotten (one sweep per refill period), and at most
    MAX_TRACKED_ADDRESSES are kept."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # address -> [allowance, at]
        self._swept_at = time.monotonic()

    def allow(self, address: str) -> bool:
        """Count one new socket from `address`; False when it is over its rate."""
        rate = settings.NOTIFICATIONS_CONNECT_RATE_PER_IP
        if rate <= 0:
            return True
        burst = float(settings.NOTIFICATIONS_CONNECT_BURST_PER_IP)
        now = time.monotonic()
        bucket = self._buckets.get(address)
        if bucket is None:
            if now - self._swept_at >= burst / rate:
                self._sweep(now, rate, burst)
            if len(self._buckets) >= MAX_TRACKED_ADDRESSES:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[address] = [burst, now]
        else:
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def _sweep(self, now: float, rate: float, burst: float) -> None:
        self._swept_at = now
        refilled = [
            address
            for address, (allowance, at) in self._buckets.items()
            if allowance + (now - at) * rate >= burst
        ]
        for address in refilled:
            del self._buckets[address]

    def __len__(self) -> int:
        return len(self._buckets)


class ConnectionRegistry:
    def __init__(self) -> None:
        # Unauthenticated sockets, each with the address it counts against.
        self.pending: dict[Socket, str | None] = {}
        self.pending_by_address: dict[str, int] = {}
        self.connect_rates = ConnectRates()
        self.by_user: dict[object, set[Socket]] = defaultdict(set)
        self._refresher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._emptied: asyncio.Event | None = None

    def admit(self, consumer: "Socket") -> str | None:
        """Register a socket that has not authenticated yet, counted against its client's
        address (client_address()); or refuse it and say why (REFUSED_*). Every attempt counts
        against the address's rate."""
        address = client_address(consumer.scope)
        if address is not None:
            if not self.connect_rates.allow(address):
                return REFUSED_RATE
            per_address = settings.NOTIFICATIONS_MAX_PENDING_PER_IP
            if per_address > 0 and self.pending_by_address.get(address, 0) >= per_address:
                return REFUSED_ADDRESS
        if len(self.pending) >= settings.NOTIFICATIONS_MAX_PENDING:
            return REFUSED_PROCESS
        self.pending[consumer] = address
        if address is not None:
            self.pending_by_address[address] = self.pending_by_address.get(address, 0) + 1
        return None

    def _leave_pending(self, consumer: "Socket") -> None:
        address = self.pending.pop(consumer, _NOT_PENDING)
        if address is _NOT_PENDING or address is None:
            return
        left = self.pending_by_address[address] - 1
        if left:
            self.pending_by_address[address] = left
        else:
            del self.pending_by_address[address]

    def authenticate(self, consumer: "Socket") -> bool:
        """Move a socket to its user's set; False when the user already has the maximum."""
        self._leave_pending(consumer)
        sockets = self.by_user[consumer.user_id]
        if len(sockets) >= settings.NOTIFICATIONS_MAX_CONNECTIONS_PER_USER:
            if not sockets:
                del self.by_user[consumer.user_id]
            return False
        sockets.add(consumer)
        self._ensure_refresher()
        return True

    def remove(self, consumer: "Socket") -> None:
        self._leave_pending(consumer)
        sockets = self.by_user.get(consumer.user_id)
        if sockets is not None:
            sockets.discard(consumer)
            if not sockets:
                del self.by_user[consumer.user_id]
        if self._emptied is not None and not self.pending and not self.by_user:
            self._emptied.set()

    def count_for_user(self, user_id) -> int:
        return len(self.by_user.get(user_id, ()))

    def authenticated(self) -> list["Socket"]:
        return [consumer for sockets in self.by_user.values() for consumer in sockets]

    def all(self) -> list["Socket"]:
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
        # The same rows carry what the token policy reads of each user: a logout, password
        # change, deactivation or deletion made where no revocation message reaches this
        # process (another process on the in-memory layer, a raw UPDATE) closes the socket
        # here, within a tick.
        while True:
            await asyncio.sleep(settings.NOTIFICATIONS_CATCHUP_INTERVAL)
            try:
                # Sockets that authenticate after this line are left to the next tick: they
                # were checked against a row at least as new as the one read below.
                sockets = self.authenticated()
                user_ids = list(self.by_user)
                found: dict = {}
                for start in range(0, len(user_ids), 1000):
                    found |= await read_from_database(users_token_states_with_last_event_ids)(
                        user_ids=user_ids[start : start + 1000]
                    )
                behind, revoked = [], []
                verdicts: dict = {}  # (user id, claims) -> passes: one check per token kind
                for consumer in sockets:
                    if consumer.closing:
                        continue
                    state, latest = found.get(consumer.user_id, (None, 0))
                    key = (consumer.user_id, consumer.claims)
                    passes = verdicts.get(key)
                    if passes is None:
                        passes = verdicts[key] = state is not None and claims_pass(
                            consumer.claims, state
                        )
                    if not passes:
                        revoked.append(consumer)
                        continue
                    if consumer.stream.last_event_id < consumer.stream.watched_event_id:
                        behind.append(consumer)
                    consumer.stream.watched_event_id = latest
                if revoked:
                    logger.info("closing %d socket(s) whose token was revoked", len(revoked))
                    await asyncio.gather(
                        *(consumer.revoke() for consumer in revoked), return_exceptions=True
                    )
                if behind:
                    logger.info("catching up %d socket(s) the channel layer missed", len(behind))
                    await asyncio.gather(
                        *(consumer.stream.catch_up() for consumer in behind), return_exceptions=True
                    )
            except Exception:
                logger.warning("delivery watch failed", exc_info=True)

    async def _refresh_groups(self) -> None:
        interval = settings.NOTIFICATIONS_GROUP_REFRESH
        while True:
            await asyncio.sleep(interval)
            for consumer in self.authenticated():
                if consumer.closing:
                    continue
                try:
                    await consumer.membership.rejoin()
                except Exception:
                    group = consumer.membership.group
                    logger.warning("group refresh failed for %s", group, exc_info=True)


_NOT_PENDING = object()

registry = ConnectionRegistry()
