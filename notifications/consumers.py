"""The WebSocket consumer: authenticate the first frame, join the user's group, replay, forward.

Every close code is the contract's (PROTOCOL §1 in the README). The consumer never branches on
event types: it forwards the stored envelope text, in id order, filling gaps from the store.
"""

import asyncio
import json
import logging
from datetime import datetime

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from notifications import selectors
from notifications.auth import TokenRejected, authenticate_access_token
from notifications.events import format_timestamp
from notifications.publish import MESSAGE_TYPE, user_group_name

logger = logging.getLogger(__name__)


class CloseCode:
    NORMAL = 1000
    SERVER_ERROR = 4000
    NO_TOKEN = 4001
    INVALID_TOKEN = 4002
    POLICY = 4008
    FRAME_TOO_LARGE = 4009
    TOO_SLOW = 4010
    RESTARTING = 4012


class _FirstFrameError(Exception):
    pass


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    # Channels joins these before connect(), i.e. before authentication: keep it empty.
    groups = []

    # Only these message types reach a handler; a channel-layer message with any other type
    # (an underscore, a typo, a private method's name) is dropped instead of dispatched.
    HANDLERS = {
        "websocket.connect": "websocket_connect",
        "websocket.receive": "websocket_receive",
        "websocket.disconnect": "websocket_disconnect",
        MESSAGE_TYPE: "notification_event",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_id = None
        self.group: str | None = None
        self.last_sent = 0
        self.expires_at: datetime | None = None
        self.closing = False
        self._deadline: asyncio.Task | None = None
        self._expiry: asyncio.Task | None = None

    async def dispatch(self, message):
        # Channels' own dispatch also awaits aclose_old_connections() before every message (a
        # thread hop); every database call here goes through database_sync_to_async, which
        # closes stale connections in the thread that uses them.
        name = self.HANDLERS.get(message.get("type"))
        if name is None:
            logger.warning("dropped a channel message of unknown type %r", message.get("type"))
            return
        try:
            await getattr(self, name)(message)
        except StopConsumer:
            raise
        except Exception:
            logger.exception("notification consumer failed (user %s)", self.user_id)
            await self._close(CloseCode.SERVER_ERROR)

    # --- WebSocket lifecycle --------------------------------------------------------------

    async def websocket_connect(self, message):
        await self.accept()
        self._deadline = asyncio.create_task(
            self._close_after(settings.NOTIFICATIONS_AUTH_TIMEOUT, CloseCode.NO_TOKEN)
        )

    async def websocket_receive(self, message):
        if self.closing:
            return
        text, data = message.get("text"), message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > settings.NOTIFICATIONS_MAX_FRAME_BYTES:
            await self._close(CloseCode.FRAME_TOO_LARGE)
        elif self.user_id is None:
            await self._authenticate(text)
        else:
            await self._handle_client_frame(text)

    async def websocket_disconnect(self, message):
        self.closing = True
        self._cancel_timers()
        if self.group is not None:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception:
                # Group membership expires on its own (group_expiry); never fail a disconnect.
                logger.warning("group_discard failed for %s", self.group, exc_info=True)
        raise StopConsumer()

    # --- authentication -------------------------------------------------------------------

    async def _authenticate(self, text: str | None) -> None:
        try:
            token, last_event_id = self._parse_first_frame(text)
        except _FirstFrameError as exc:
            logger.info("websocket auth failed: %s", exc)
            await self._close(CloseCode.NO_TOKEN)
            return
        try:
            auth = await database_sync_to_async(authenticate_access_token)(token)
        except TokenRejected as exc:
            logger.info("websocket auth failed: %s", exc.reason)
            await self._close(CloseCode.INVALID_TOKEN)
            return
        if self.closing:
            return
        self._deadline.cancel()
        self.user_id = auth.user.id
        self.group = user_group_name(self.user_id)
        # Join before reading the store: an event committed after this line reaches us live,
        # one committed before it is in the store; together they leave no gap.
        await self.channel_layer.group_add(self.group, self.channel_name)
        resume = await database_sync_to_async(selectors.event_resume_point_for_user)(
            user_id=self.user_id, last_event_id=last_event_id
        )
        self._set_expiry(auth.expires_at)
        await self.send_json(
            {
                "type": "connected",
                "user_id": str(self.user_id),
                "last_event_id": resume.latest_id,
                "recovered": resume.recovered,
                "expires_at": format_timestamp(auth.expires_at),
            }
        )
        if last_event_id is not None and resume.recovered:
            self.last_sent = last_event_id
            await self._send_from_store(up_to=None)
        else:
            self.last_sent = resume.latest_id

    @staticmethod
    def _parse_first_frame(text: str | None) -> tuple[str, int | None]:
        if text is None:
            raise _FirstFrameError("binary first frame")
        try:
            content = json.loads(text)
        except (ValueError, RecursionError):
            raise _FirstFrameError("first frame is not JSON") from None
        if not isinstance(content, dict):
            raise _FirstFrameError("first frame is not an object")
        token = content.get("token")
        if not isinstance(token, str) or not token.strip():
            raise _FirstFrameError("no token")
        last_event_id = content.get("last_event_id")
        if last_event_id is not None and (
            isinstance(last_event_id, bool)
            or not isinstance(last_event_id, int)
            or last_event_id < 0
        ):
            raise _FirstFrameError("last_event_id is not a non-negative integer")
        return token, last_event_id

    # --- frames after authentication ------------------------------------------------------

    async def _handle_client_frame(self, text: str | None) -> None:
        if text is None:
            return
        try:
            content = json.loads(text)
        except (ValueError, RecursionError):
            return
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "refresh":
            await self._refresh(content.get("token"))

    async def _refresh(self, token) -> None:
        if not isinstance(token, str) or not token.strip():
            await self._close(CloseCode.INVALID_TOKEN)
            return
        try:
            auth = await database_sync_to_async(authenticate_access_token)(token)
        except TokenRejected as exc:
            logger.info("websocket token refresh failed: %s", exc.reason)
            await self._close(CloseCode.INVALID_TOKEN)
            return
        if auth.user.id != self.user_id:
            # Never switch identity on an open socket.
            logger.warning("websocket refresh with another user's token (user %s)", self.user_id)
            await self._close(CloseCode.INVALID_TOKEN)
            return
        self._set_expiry(auth.expires_at)
        await self.send_json(
            {"type": "token_refreshed", "expires_at": format_timestamp(auth.expires_at)}
        )

    # --- events ---------------------------------------------------------------------------

    async def notification_event(self, message):
        if self.closing or message.get("user_id") != str(self.user_id):
            return
        event_id = message["event_id"]
        if event_id <= self.last_sent:
            return  # already sent by a replay or a gap fill
        if event_id > self.last_sent + 1:
            # The layer dropped or reordered something: the store has every committed event.
            await self._send_from_store(up_to=event_id - 1)
        await self.send(text_data=message["envelope"])
        self.last_sent = event_id

    async def _send_from_store(self, *, up_to: int | None) -> None:
        batch = settings.NOTIFICATIONS_REPLAY_BATCH
        while not self.closing:
            events = await database_sync_to_async(selectors.event_list_for_user)(
                user_id=self.user_id, after=self.last_sent, limit=batch, up_to=up_to
            )
            for event in events:
                await self.send(text_data=event.envelope_json())
                self.last_sent = event.sequence
            if len(events) < batch:
                return

    # --- timers and closing ---------------------------------------------------------------

    def _set_expiry(self, expires_at: datetime) -> None:
        self.expires_at = expires_at
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.create_task(self._expire(expires_at))

    async def _expire(self, expires_at: datetime) -> None:
        warning = settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING
        remaining = (expires_at - timezone.now()).total_seconds()
        if remaining > warning:
            await asyncio.sleep(remaining - warning)
            await self.send_json(
                {"type": "token_expiring", "expires_at": format_timestamp(expires_at)}
            )
        await asyncio.sleep(max(0.0, (expires_at - timezone.now()).total_seconds()))
        logger.info("websocket token expired (user %s)", self.user_id)
        await self._close(CloseCode.INVALID_TOKEN)

    async def _close_after(self, delay: float, code: int) -> None:
        await asyncio.sleep(delay)
        logger.info("websocket auth timeout")
        await self._close(code)

    def _cancel_timers(self) -> None:
        current = asyncio.current_task()
        for task in (self._deadline, self._expiry):
            if task is not None and task is not current:
                task.cancel()

    async def _close(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        self._cancel_timers()
        await self.close(code=code)
