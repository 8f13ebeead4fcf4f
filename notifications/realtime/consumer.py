"""The WebSocket consumer: authenticate the first frame, join the user's group, replay, forward.

Every close code is the contract's (README, "Close codes"). The consumer never branches on
event types: it forwards the stored envelope text, in id order, filling gaps from the store.
"""

import asyncio
import json
import logging
import time
from datetime import datetime

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.settings import api_settings

from notifications import selectors
from notifications.events import format_timestamp
from notifications.publish import MESSAGE_TYPE, REVOKE_TYPE, user_group_name
from notifications.realtime import telemetry
from notifications.realtime.auth import (
    TokenRejected,
    authenticate_loaded_user,
    authenticate_validated_token,
    validate_access_token,
)
from notifications.realtime.connections import REFUSED_PROCESS, client_address, registry
from notifications.realtime.database import BatchedRead, read_from_database
from reasonflow.users.authentication import JWTAuthentication
from reasonflow.users.tokens import VERSION_CLAIM

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


# Stands in for a channel-layer message when the layer itself fails; compared by identity, so
# nothing sent through the layer can impersonate it.
_LAYER_LOST = {"type": "layer.lost"}


def _read_connecting_users(requests):
    return selectors.connecting_users_with_resume_points(requests=requests)


# Every connecting socket's database visit; a reconnect rush is served a batch per query.
_connecting_user = BatchedRead(_read_connecting_users)

_ABSENT = object()  # a claim the token does not have (unlike one that is null)


def _policy_claim_names() -> tuple[str, ...]:
    # What JWTAuthentication.check_user reads of a token: an open socket keeps these claims,
    # not its whole token, so the delivery watch can check it again (pinned by test_hardening's
    # test_the_delivery_watch_keeps_sockets_whose_tokens_still_pass).
    return (VERSION_CLAIM, api_settings.REVOKE_TOKEN_CLAIM)


def _policy_claims(validated) -> tuple:
    payload = validated.payload
    return tuple(payload.get(name, _ABSENT) for name in _policy_claim_names())


def _authenticate_refresh(token: str):
    validated, _ = validate_access_token(token)
    return authenticate_validated_token(validated), _policy_claims(validated)


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
        REVOKE_TYPE: "notification_revoke",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_id = None
        self._user_key: str | None = None
        self.group: str | None = None
        self.last_sent = 0
        self.expires_at: datetime | None = None
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_task: asyncio.Future | None = None
        self._layer_lost = False
        self._allowance = float(settings.NOTIFICATIONS_RATE_BURST)
        self._allowance_at = time.monotonic()
        # Live events, replays and the registry's catch-up all send store-ordered frames:
        # one at a time, so ids never interleave.
        self._send_lock = asyncio.Lock()
        self.watch_target = 0
        self.claims: tuple = ()  # _policy_claims() of the token in use
        self.opened_at: float | None = None  # telemetry: accepted at (monotonic), close code
        self.close_code: int | None = None
        self.channel_name: str | None = None
        self._inbox: list[dict] = []
        self._layer_task: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        # Channels' own loop waits on the socket and on the channel layer with two tasks per
        # consumer, made anew for every message. Here this task reads the socket, and only an
        # authenticated socket has a channel: the pub/sub layer calls _layer_message for each
        # message (no task while idle), other layers are read by one task. A failing layer
        # closes sockets with a retryable code (4012) instead of crashing them (1011), and the
        # registry always forgets the socket, however it ends.
        self.scope = scope
        self.channel_layer = get_channel_layer()
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            self._cancel_timer()
            registry.remove(self)
            telemetry.socket_closed(self)
            await self._leave_layer()

    async def _join_layer(self) -> None:
        layer = self.channel_layer
        local = hasattr(layer, "new_local_channel")
        if local:
            self.channel_name = layer.new_local_channel(self._layer_message)
        else:
            self.channel_name = await layer.new_channel()
        await layer.group_add(self.group, self.channel_name)
        if not local:
            self._layer_task = asyncio.get_running_loop().create_task(self._read_layer())

    async def _leave_layer(self) -> None:
        if self.channel_name is not None and hasattr(self.channel_layer, "discard_local_channel"):
            self.channel_layer.discard_local_channel(self.channel_name)
        task = self._layer_task
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # let it finish cancelling; its outcome is not ours

    def _layer_message(self, message: dict) -> None:
        # Called by the layer for each message of this socket's channel. The next event of an
        # idle socket is written right here; anything else goes to one task that forwards the
        # burst in arrival order.
        if self.closing:
            return
        if self._layer_task is None and self._forward_at_once(message):
            return
        self._inbox.append(message)
        if self._layer_task is None:
            self._layer_task = asyncio.get_running_loop().create_task(self._forward_inbox())

    def _forward_at_once(self, message: dict) -> bool:
        """Write the next event without a task when nothing else is sending: a task, a send
        timer and the lock per delivery were two thirds of a fan-out's server time.

        The server's send coroutine is run by hand: it finishes at once unless the client has
        stopped reading, and then a task takes it over, lock and send timeout included. False
        when the event must take the ordinary way (a gap to fill, a send in progress).
        """
        if (
            message.get("type") != MESSAGE_TYPE
            or message.get("user_id") != self._user_key
            or message.get("event_id") != self.last_sent + 1
            or not _acquired_at_once(self._send_lock)
        ):
            return False
        sending = self.base_send({"type": "websocket.send", "text": message["envelope"]})
        try:
            blocked_on = sending.send(None)
        except StopIteration:
            self._send_lock.release()
            self._sent(message)
            return True
        except Exception:
            # Nothing was written: the ordinary way sends again and handles the failure.
            self._send_lock.release()
            return False
        self._layer_task = asyncio.get_running_loop().create_task(
            self._forward_inbox(_Resumed(sending, blocked_on), message)
        )
        return True

    async def _forward_inbox(self, sending=None, message=None) -> None:
        try:
            if sending is not None:
                # Started by _forward_at_once, which holds the lock for it.
                try:
                    await self._handle(self._finish_send(sending, message))
                finally:
                    self._send_lock.release()
            while self._inbox:
                await self.dispatch(self._inbox.pop(0))
        finally:
            self._layer_task = None

    async def _finish_send(self, sending, message: dict) -> None:
        if await self._complete_send(sending):
            self._sent(message)

    async def _read_layer(self) -> None:
        while not self.closing:
            try:
                message = await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("channel layer receive failed (user %s)", self.user_id, exc_info=1)
                self._layer_lost = True
                await self.dispatch(_LAYER_LOST)
                return
            await self.dispatch(message)

    async def dispatch(self, message):
        # Channels' own dispatch also awaits aclose_old_connections() before every message (a
        # thread hop); every database read here goes through read_from_database, which
        # closes stale connections in the thread that uses them. Socket and layer messages
        # run in different tasks: state shared by sends is guarded by _send_lock.
        if message is _LAYER_LOST:
            # A layer that failed may have lost every group (a Redis restart keeps nothing):
            # no socket of this process can trust its membership, so all of them resume.
            await registry.close_authenticated(CloseCode.RESTARTING)
            await self.close_with(CloseCode.RESTARTING)
            return
        name = self.HANDLERS.get(message.get("type"))
        if name is None:
            logger.warning("dropped a channel message of unknown type %r", message.get("type"))
            return
        await self._handle(getattr(self, name)(message))

    async def _handle(self, handling) -> None:
        try:
            await handling
        except StopConsumer:
            raise
        except Exception:
            logger.exception("notification consumer failed (user %s)", self.user_id)
            await self.close_with(CloseCode.SERVER_ERROR)

    # --- WebSocket lifecycle --------------------------------------------------------------

    async def websocket_connect(self, message):
        address = client_address(self.scope)
        refused = registry.admit(self, address)
        if refused is not None:
            # Refuse before accepting (HTTP 403): unauthenticated sockets cost memory.
            if refused == REFUSED_PROCESS:
                logger.warning(
                    "refused a socket: %d unauthenticated already", len(registry.pending)
                )
            telemetry.socket_refused(refused, address)
            self.closing = True
            await self.close()
            return
        await self.base_send({"type": "websocket.accept"})
        telemetry.socket_accepted(self)
        self._schedule(settings.NOTIFICATIONS_AUTH_TIMEOUT, self._auth_deadline_passed)

    async def websocket_receive(self, message):
        if self.closing:
            return
        text, data = message.get("text"), message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > settings.NOTIFICATIONS_MAX_FRAME_BYTES:
            await self.close_with(CloseCode.FRAME_TOO_LARGE)
        elif not self._within_rate_limit():
            logger.info("websocket rate limit exceeded (user %s)", self.user_id)
            await self.close_with(CloseCode.POLICY)
        elif self.user_id is None:
            await self._authenticate(text)
        else:
            await self._handle_client_frame(text)

    async def websocket_disconnect(self, message):
        self.closing = True
        telemetry.socket_closing(self, message.get("code"))
        self._cancel_timer()
        registry.remove(self)
        if self.channel_name is not None and self.group is not None and not self._layer_lost:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception:
                # Membership expires on its own (group_expiry); never fail a disconnect.
                logger.warning("group_discard failed for %s", self.group, exc_info=True)
        raise StopConsumer()

    # --- authentication -------------------------------------------------------------------

    async def _authenticate(self, text: str | None) -> None:
        try:
            token, last_event_id = self._parse_first_frame(text)
        except _FirstFrameError as exc:
            telemetry.auth_failed(str(exc))
            await self.close_with(CloseCode.NO_TOKEN)
            return
        try:
            validated, claimed_user_id = validate_access_token(token)
        except TokenRejected as exc:
            telemetry.auth_failed(exc.reason)
            await self.close_with(CloseCode.INVALID_TOKEN)
            return
        self.group = user_group_name(claimed_user_id)
        # Held until the replay is sent: live events wait behind "connected" and the replay.
        async with self._send_lock:
            # Join before reading the store: an event committed after this line reaches us
            # live, one committed before it is in the store; together they leave no gap. The
            # user is checked in the same database visit as the store.
            await self._join_layer()
            user, resume = await _connecting_user((claimed_user_id, last_event_id))
            try:
                auth = authenticate_loaded_user(validated, user)
            except TokenRejected as exc:
                telemetry.auth_failed(exc.reason)
                await self.close_with(CloseCode.INVALID_TOKEN)
                return
            if self.closing:
                return
            self.claims = _policy_claims(validated)
            self._cancel_timer()
            self.user_id = auth.user.id
            self._user_key = str(self.user_id)  # as layer messages carry it
            if not registry.authenticate(self):
                logger.info("websocket refused: user %s has too many connections", self.user_id)
                await self.close_with(CloseCode.POLICY)
                return
            telemetry.socket_authenticated(self)
            await self._send_json(
                {
                    "type": "connected",
                    "user_id": str(self.user_id),
                    "last_event_id": resume.latest_id,
                    "recovered": resume.recovered,
                    "expires_at": format_timestamp(auth.expires_at),
                }
            )
            self._set_expiry(auth.expires_at)
            if last_event_id is not None and resume.recovered:
                self.last_sent = last_event_id
                await self._send_from_store(up_to=None)
                telemetry.replayed(self.last_sent - last_event_id)
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

    def _within_rate_limit(self) -> bool:
        # A token bucket: NOTIFICATIONS_RATE_LIMIT frames a second, bursts of RATE_BURST.
        now = time.monotonic()
        self._allowance = min(
            float(settings.NOTIFICATIONS_RATE_BURST),
            self._allowance + (now - self._allowance_at) * settings.NOTIFICATIONS_RATE_LIMIT,
        )
        self._allowance_at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

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
            await self._send_json({"type": "pong"})
        elif kind == "refresh":
            await self._refresh(content.get("token"))

    async def _refresh(self, token) -> None:
        if not isinstance(token, str) or not token.strip():
            await self.close_with(CloseCode.INVALID_TOKEN)
            return
        try:
            auth, claims = await read_from_database(_authenticate_refresh)(token)
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
        self._cancel_timer()
        await self._send_json(
            {"type": "token_refreshed", "expires_at": format_timestamp(auth.expires_at)}
        )
        self._set_expiry(auth.expires_at)

    # --- channel-layer messages -----------------------------------------------------------

    async def notification_event(self, message):
        # Under the lock before anything else: an event that arrives while the socket
        # authenticates waits for "connected" and the replay, then counts as this user's.
        async with self._send_lock:
            if self.closing or message.get("user_id") != self._user_key:
                return
            await self._forward(message)

    async def _forward(self, message) -> None:
        event_id = message["event_id"]
        if event_id <= self.last_sent:
            return  # already sent by a replay or a gap fill
        if event_id > self.last_sent + 1:
            # The layer dropped or reordered something: the store has every committed event.
            telemetry.gap_filled()
            await self._send_from_store(up_to=event_id - 1)
        if await self._send_text(message["envelope"]):
            self._sent(message)

    def _sent(self, message: dict) -> None:
        self.last_sent = message["event_id"]
        telemetry.event_delivered(message)

    async def catch_up(self) -> None:
        """Send every stored event newer than the last one sent (the channel layer lost some)."""
        async with self._send_lock:
            if not self.closing:
                await self._send_from_store(up_to=None)

    async def notification_revoke(self, message):
        # The socket joins its group before its user is read: a revocation that arrives in
        # between waits for authentication to finish (it holds the lock) instead of being
        # mistaken for another user's.
        async with self._send_lock:
            pass
        if message.get("user_id") == self._user_key:
            await self.revoke()

    def token_passes(self, user) -> bool:
        """True while this socket's token passes the token policy (the checks REST applies)
        against `user` as stored now (a model or a selectors.UserTokenState)."""
        kept = zip(_policy_claim_names(), self.claims, strict=True)
        claims = {name: value for name, value in kept if value is not _ABSENT}
        try:
            JWTAuthentication.check_user(claims, user)
        except AuthenticationFailed:
            return False
        return True

    async def revoke(self) -> None:
        """Close 4002: the user's tokens were revoked (logout, password change, deactivation,
        deletion)."""
        if not self.closing:
            logger.info("websocket closed: tokens of user %s revoked", self.user_id)
            await self.close_with(CloseCode.INVALID_TOKEN)

    async def _send_from_store(self, *, up_to: int | None) -> None:
        batch = settings.NOTIFICATIONS_REPLAY_BATCH
        while not self.closing:
            events = await read_from_database(selectors.event_list_for_user)(
                user_id=self.user_id, after=self.last_sent, limit=batch, up_to=up_to
            )
            for event in events:
                if not await self._send_text(event.envelope_json()):
                    return
                self.last_sent = event.sequence
            if len(events) < batch:
                return

    async def _send_json(self, content: dict) -> bool:
        return await self._send_text(json.dumps(content))

    async def _send_text(self, text: str) -> bool:
        """Send one frame; a client that has not taken it within the send timeout is too
        slow: close 4010 (it resumes with last_event_id) rather than buffer without bound."""
        if self.closing:
            return False
        # Straight to the server: Channels' two send wrappers cost more than the frame.
        return await self._complete_send(self.base_send({"type": "websocket.send", "text": text}))

    async def _complete_send(self, sending) -> bool:
        try:
            async with asyncio.timeout(settings.NOTIFICATIONS_SEND_TIMEOUT):
                await sending
        except TimeoutError:
            logger.info("websocket client too slow (user %s)", self.user_id)
            await self.close_with(CloseCode.TOO_SLOW)
            return False
        return True

    async def rejoin_group(self) -> None:
        """Refresh this socket's group membership before group_expiry drops it."""
        if self.group is not None and not self.closing:
            await self.channel_layer.group_add(self.group, self.channel_name)

    # --- timers and closing ---------------------------------------------------------------

    def _schedule(self, delay: float, callback) -> None:
        # A timer handle, not a task per socket: sockets idle for hours cost no coroutine.
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._fire, callback)

    def _fire(self, callback) -> None:
        self._timer = None
        # Referenced until it ends: the loop itself keeps only a weak reference to a task.
        self._timer_task = asyncio.ensure_future(callback())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _auth_deadline_passed(self) -> None:
        if self.user_id is None:
            telemetry.auth_failed("timeout")
            await self.close_with(CloseCode.NO_TOKEN)

    def _set_expiry(self, expires_at: datetime) -> None:
        self.expires_at = expires_at
        remaining = (expires_at - timezone.now()).total_seconds()
        warning = settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING
        # A token that is already inside the warning window is warned about at once, so a
        # client that waits for token_expiring always gets the chance to refresh.
        self._schedule(max(0.0, remaining - warning), self._token_expiring)

    async def _token_expiring(self) -> None:
        if self.closing or self.expires_at is None:
            return
        await self._send_json(
            {"type": "token_expiring", "expires_at": format_timestamp(self.expires_at)}
        )
        remaining = (self.expires_at - timezone.now()).total_seconds()
        self._schedule(remaining, self._token_expired)

    async def _token_expired(self) -> None:
        if not self.closing:
            logger.info("websocket token expired (user %s)", self.user_id)
            await self.close_with(CloseCode.INVALID_TOKEN)

    async def close_with(self, code: int) -> None:
        """Close the socket with `code` once; later calls do nothing."""
        if self.closing:
            return
        self.closing = True
        self._cancel_timer()
        try:
            telemetry.socket_closing(self, code)
            await self.close(code=code)
        except Exception:
            logger.debug("close after the socket went away", exc_info=True)


def _acquired_at_once(lock: asyncio.Lock) -> bool:
    """Take `lock` if that needs no waiting (acquire() of a free lock returns at once)."""
    if lock.locked():
        return False
    acquiring = lock.acquire()
    try:
        acquiring.send(None)
    except StopIteration:
        return True
    acquiring.close()  # another task is queued for it
    return False


class _Resumed:
    """An awaitable that finishes a coroutine started by hand, from where it stopped
    (`blocked_on`, what its first step yielded): `yield from` written out, so a task can
    take the coroutine over with cancellation (the send timeout) passed through."""

    def __init__(self, coroutine, blocked_on) -> None:
        self.coroutine = coroutine
        self.blocked_on = blocked_on

    def __await__(self):
        coroutine, pending = self.coroutine, self.blocked_on
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:
                try:
                    pending = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coroutine.send(value)
                except StopIteration as done:
                    return done.value
