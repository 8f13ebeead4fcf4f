"""Subscriber: what a live connection does whatever its transport (the WebSocket consumer,
the server-sent events response): take its user's layer messages in order, start its stream
once the user is known, follow the token's expiry and revocation, and forget itself however it
ends. A transport adds how it authenticates, how it writes frames and how it closes.
"""

import logging
from datetime import datetime

from channels.exceptions import StopConsumer
from django.conf import settings
from django.utils import timezone

from notifications.close_codes import CloseCode
from notifications.events import format_timestamp
from notifications.publish import MESSAGE_TYPE, REVOKE_TYPE
from notifications.realtime import telemetry
from notifications.realtime.auth import AuthenticatedToken
from notifications.realtime.connections import registry
from notifications.realtime.membership import LAYER_LOST, LayerMembership
from notifications.realtime.selectors import ResumePoint
from notifications.realtime.timers import Timer

logger = logging.getLogger(__name__)

# The channel-layer messages a subscriber takes, by the method that handles each.
LAYER_HANDLERS = {MESSAGE_TYPE: "notification_event", REVOKE_TYPE: "notification_revoke"}


class Subscriber:
    transport_name = ""  # "websocket" | "sse": labels metrics and log lines
    HANDLERS = LAYER_HANDLERS

    # Set by the transport: stream (an EventStream), scope.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_id = None
        self.expires_at: datetime | None = None
        self.closing = False
        self.timer = Timer()
        self.claims: tuple = ()  # auth.policy_claims() of the token in use
        self.opened_at: float | None = None  # telemetry: accepted at (monotonic), close code
        self.close_code: int | None = None
        self.membership = LayerMembership(self)

    async def close_with(self, code: int) -> None:
        """End the connection with close code `code`: each transport (the socket's consumer,
        the event stream) says it its own way."""
        raise NotImplementedError

    async def forget(self) -> None:
        """The connection is gone, however it ended (a disconnect, a cancelled task): no
        timer, registry entry, group member or channel left."""
        self.timer.cancel()
        try:
            # Out of the group before out of the registry: a connection the registry no
            # longer lists takes no more events.
            await self.membership.discard()
        finally:
            registry.remove(self)
            telemetry.socket_closed(self)
            await self.membership.leave()

    async def dispatch(self, message):
        # Every database read here goes through read_from_database (read threads that replace
        # a broken connection). Client and layer messages run in different tasks: state
        # shared by sends is guarded by the stream's lock.
        if message is LAYER_LOST:
            # A layer that failed may have lost every group (a Redis restart keeps nothing):
            # no connection of this process can trust its membership, so all of them resume.
            await registry.close_authenticated(CloseCode.RESTARTING)
            await self.close_with(CloseCode.RESTARTING)
            return
        name = self.HANDLERS.get(message.get("type"))
        if name is None:
            logger.warning("dropped a channel message of unknown type %r", message.get("type"))
            return
        await self.handle(getattr(self, name)(message))

    async def handle(self, handling) -> None:
        """Await `handling`; a failure closes 4000 (never a traceback to the client)."""
        try:
            await handling
        except StopConsumer:
            raise
        except Exception:
            logger.exception("%s connection failed (user %s)", self.transport_name, self.user_id)
            await self.close_with(CloseCode.SERVER_ERROR)

    async def subscribed(
        self, auth: AuthenticatedToken, claims: tuple, resume: ResumePoint, last_event_id
    ) -> None:
        """The user is known and the group joined (the caller holds the stream's lock): count
        the connection, send "connected", follow the token's expiry, replay what was missed."""
        self.claims = claims
        self.timer.cancel()
        self.user_id = auth.user.id
        self.stream.start(self.user_id, last_event_id=resume.last_event_id)
        if not registry.authenticate(self):
            logger.info(
                "%s refused: user %s has too many connections", self.transport_name, self.user_id
            )
            await self.close_with(CloseCode.POLICY)
            return
        telemetry.socket_authenticated(self)
        await self.stream.send_json(
            {
                "type": "connected",
                "user_id": str(self.user_id),
                "last_event_id": resume.last_event_id,
                "recovered": resume.recovered,
                "expires_at": format_timestamp(auth.expires_at),
            }
        )
        self.follow_expiry(auth.expires_at)
        if last_event_id is not None and resume.recovered:
            await self.stream.replay(after=last_event_id)

    async def notification_event(self, message):
        await self.stream.deliver(message)

    async def notification_revoke(self, message):
        # The connection joins its group before its user is read: a revocation that arrives in
        # between waits for authentication to finish (it holds the lock) instead of being
        # mistaken for another user's.
        async with self.stream.lock:
            pass
        if message.get("user_id") == self.stream.user_key:
            await self.revoke()

    async def revoke(self) -> None:
        """Close 4002: the user's tokens were revoked (logout, new password, deactivation...)."""
        if not self.closing:
            logger.info("%s closed: tokens of user %s revoked", self.transport_name, self.user_id)
            await self.close_with(CloseCode.INVALID_TOKEN)

    def follow_expiry(self, expires_at: datetime) -> None:
        """Warn with token_expiring before `expires_at`, close 4002 at it."""
        self.expires_at = expires_at
        remaining = (expires_at - timezone.now()).total_seconds()
        # A token that is already inside the warning window is warned about at once, so a
        # client that waits for token_expiring always gets the chance to refresh.
        warning = settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING
        self.timer.schedule(max(0.0, remaining - warning), self._token_expiring)

    async def _token_expiring(self) -> None:
        if self.closing or self.expires_at is None:
            return
        await self.stream.send_json(
            {"type": "token_expiring", "expires_at": format_timestamp(self.expires_at)}
        )
        remaining = (self.expires_at - timezone.now()).total_seconds()
        self.timer.schedule(remaining, self._token_expired)

    async def _token_expired(self) -> None:
        if not self.closing:
            logger.info("%s token expired (user %s)", self.transport_name, self.user_id)
            await self.close_with(CloseCode.INVALID_TOKEN)
