"""The WebSocket consumer: the socket's lifecycle, first-frame authentication, rate limit and
in-band refresh. What it does once its user is known is a Subscriber's (subscriber.py), and
what it sends after "connected" is its EventStream's (stream.py): the stored envelopes in id
order, gaps filled from the store; it never branches on event types.
"""

import json
import logging

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from notifications import compat
from notifications.close_codes import CloseCode
from notifications.events import format_timestamp
from notifications.publish import user_group_name
from notifications.realtime import selectors, telemetry
from notifications.realtime.auth import (
    FirstFrameError,
    TokenRejected,
    authenticate_loaded_user,
    authenticate_refresh,
    parse_first_frame,
    policy_claims,
    validate_access_token,
)
from notifications.realtime.connections import registry
from notifications.realtime.database import read_from_database
from notifications.realtime.stream import EventStream
from notifications.realtime.subscriber import LAYER_HANDLERS, Subscriber
from notifications.realtime.timers import FrameBucket

logger = logging.getLogger(__name__)


class NotificationConsumer(Subscriber, AsyncJsonWebsocketConsumer):
    transport_name = "websocket"
    # Channels joins these before connect(), i.e. before authentication: keep it empty.
    groups = []

    # Only these message types reach a handler; a channel-layer message with any other type
    # (an underscore, a typo, a private method's name) is dropped instead of dispatched.
    HANDLERS = {
        "websocket.connect": "websocket_connect",
        "websocket.receive": "websocket_receive",
        "websocket.disconnect": "websocket_disconnect",
        **LAYER_HANDLERS,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = FrameBucket(
            rate=settings.NOTIFICATIONS_RATE_LIMIT, burst=settings.NOTIFICATIONS_RATE_BURST
        )
        # Frames go straight to the server: Channels' two send wrappers cost more than a frame.
        self.stream = EventStream(
            self, lambda text: self.base_send({"type": "websocket.send", "text": text})
        )

    async def __call__(self, scope, receive, send):
        # Channels' own loop waits on the socket and on the channel layer with two tasks per
        # consumer, made anew for every message. Here this task reads the socket, and only an
        # authenticated socket has a channel: the pub/sub layer calls _layer_message for each
        # message (no task while idle), other layers are read by one task. A failing layer
        # closes sockets with a retryable code (4012) instead of crashing them (1011), and the
        # registry always forgets the socket, however it ends.
        self.scope, self.channel_layer, self.base_send = scope, get_channel_layer(), send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            await self.forget()

    # --- WebSocket lifecycle --------------------------------------------------------------

    async def websocket_connect(self, message):
        refused = registry.admit(self)
        if refused is not None:
            # Refuse before accepting (HTTP 403): unauthenticated sockets cost memory.
            telemetry.socket_refused(refused, self.scope)
            self.closing = True
            await self.close()
            return
        await self.base_send({"type": "websocket.accept"})
        self.stream.write_at_once = compat.text_frame_writer(self.base_send)
        telemetry.socket_accepted(self)
        self.timer.schedule(settings.NOTIFICATIONS_AUTH_TIMEOUT, self._auth_deadline_passed)

    async def websocket_receive(self, message):
        if self.closing:
            return
        text, data = message.get("text"), message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > settings.NOTIFICATIONS_MAX_FRAME_BYTES:
            await self.close_with(CloseCode.FRAME_TOO_LARGE)
        elif not self.frames.take():
            logger.info("websocket rate limit exceeded (user %s)", self.user_id)
            await self.close_with(CloseCode.POLICY)
        elif self.user_id is None:
            await self._authenticate(text)
        else:
            await self._handle_client_frame(text)

    async def websocket_disconnect(self, message):
        self.closing = True
        telemetry.socket_closing(self, message.get("code"))
        raise StopConsumer()  # __call__ then forgets the socket

    # --- authentication -------------------------------------------------------------------

    async def _authenticate(self, text: str | None) -> None:
        try:
            token, last_event_id = parse_first_frame(text)
            validated, claimed_user_id = validate_access_token(token)
        except FirstFrameError as exc:
            telemetry.auth_failed(str(exc))
            await self.close_with(CloseCode.NO_TOKEN)
            return
        except TokenRejected as exc:
            telemetry.auth_failed(exc.reason)
            await self.close_with(CloseCode.INVALID_TOKEN)
            return
        # Held until the replay is sent: live events wait behind "connected" and the replay.
        async with self.stream.lock:
            # Join before reading the store: an event committed after this line reaches us
            # live, one committed before it is in the store; together they leave no gap. The
            # user is checked in the same database visit as the store.
            await self.membership.join(self.channel_layer, user_group_name(claimed_user_id))
            user, resume = await selectors.connecting_user((claimed_user_id, last_event_id))
            try:
                auth = authenticate_loaded_user(validated, user)
            except TokenRejected as exc:
                telemetry.auth_failed(exc.reason)
                await self.close_with(CloseCode.INVALID_TOKEN)
                return
            if not self.closing:
                await self.subscribed(auth, policy_claims(validated), resume, last_event_id)

    # --- frames after authentication ------------------------------------------------------

    async def _handle_client_frame(self, text: str | None) -> None:
        try:
            content = json.loads(text) if text is not None else None
        except (ValueError, RecursionError):
            return
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ping":
            await self.stream.send_json({"type": "pong"})
        elif kind == "refresh":
            await self._refresh(content.get("token"))

    async def _refresh(self, token) -> None:
        if not isinstance(token, str) or not token.strip():
            await self.close_with(CloseCode.INVALID_TOKEN)
            return
        try:
            auth, claims = await read_from_database(authenticate_refresh)(token)
        except TokenRejected as exc:
            telemetry.auth_failed(f"refresh {exc.reason}")
            await self.close_with(CloseCode.INVALID_TOKEN)
            return
        if auth.user.id != self.user_id:
            # Never switch identity on an open socket.
            logger.warning("websocket refresh with another user's token (user %s)", self.user_id)
            await self.close_with(CloseCode.INVALID_TOKEN)
            return
        self.expires_at = auth.expires_at  # the old deadline must not fire meanwhile
        self.claims = claims
        self.timer.cancel()
        await self.stream.send_json(
            {"type": "token_refreshed", "expires_at": format_timestamp(auth.expires_at)}
        )
        self.follow_expiry(auth.expires_at)

    # --- timers and closing ---------------------------------------------------------------

    async def _auth_deadline_passed(self) -> None:
        if self.user_id is None:
            telemetry.auth_failed("timeout")
            await self.close_with(CloseCode.NO_TOKEN)

    async def close_with(self, code: int) -> None:
        """Close the socket with `code` once; later calls do nothing."""
        if self.closing:
            return
        self.closing = True
        self.timer.cancel()
        try:
            telemetry.socket_closing(self, code)
            await self.close(code=code)
        except Exception:
            logger.debug("close after the socket went away", exc_info=True)
