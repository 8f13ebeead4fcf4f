"""The event stream over server-sent events (PROTOCOL §5): one long `text/event-stream`
response per connection, for networks that block WebSocket upgrades.

Everything after authentication is the socket's: the same Subscriber (group, registry, caps,
revocation, expiry, presence, metrics labelled `sse`) and the same EventStream (replay, gap
fill, slow-client timeout), only framed as SSE. Authentication happens before the response
starts, so every refusal is a plain JSON answer (401, 403, 400, 429); once the stream runs it
ends with an `event: closed` carrying the socket's close code.
"""

import asyncio
import json
import logging
from urllib.parse import parse_qs

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from notifications import compat
from notifications.memo import LastResult
from notifications.publish import user_group_name
from notifications.realtime import selectors, telemetry
from notifications.realtime.auth import (
    AuthenticatedToken,
    TokenRejected,
    authenticate_loaded_user,
    claims_pass,
    policy_claims,
    policy_claims_of,
    validate_access_token,
)
from notifications.realtime.connections import registry
from notifications.realtime.origins import origin_allowed
from notifications.realtime.stream import EventStream
from notifications.realtime.subscriber import Subscriber
from notifications.services import stream_ticket_redeem

logger = logging.getLogger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx would otherwise buffer the response and deliver events in bursts.
    (b"x-accel-buffering", b"no"),
]
PING = ": ping\n\n"
# How long the final `closed` event may wait for a client that has stopped reading.
CLOSE_TIMEOUT = 1.0


def _frame(event_id: int, event_type: str, envelope: str) -> str:
    return f"id: {event_id}\nevent: {event_type}\ndata: {envelope}\n\n"


# One string for every member of a group message: its chunk is then built once too
# (compat.chunk_writer).
_live_frame = LastResult(
    lambda message: _frame(message["event_id"], message["event_type"], message["envelope"])
)


class SseEventStream(EventStream):
    """EventStream framed as server-sent events: events carry `id` (what EventSource sends
    back as Last-Event-ID) and their type as the event name; control frames are named events
    without an id."""

    def event_frame(self, message: dict) -> str:
        return _live_frame(message)

    def stored_event_frame(self, event_id: int, event_type: str, envelope: str) -> str:
        return _frame(event_id, event_type, envelope)

    def control_frame(self, content: dict) -> str:
        return f"event: {content['type']}\ndata: {json.dumps(content)}\n\n"


class Refused(Exception):
    """The request cannot open a stream: answer `status` with a JSON `body` instead."""

    def __init__(self, status: int, body: dict, reason: str = "") -> None:
        super().__init__(reason)
        self.status, self.body, self.reason = status, body, reason


def _unauthorized(reason: str, detail: str) -> Refused:
    return Refused(401, {"detail": detail, "code": reason}, reason)


class EventStreamConsumer(Subscriber, AsyncConsumer):
    """GET /api/v1/notifications/stream. A Channels consumer that runs its own loop, as the
    socket's does: the request is read and answered in this task, layer messages reach it
    through its LayerMembership, and the loop waits for the client's disconnect, sending a
    ping whenever the stream has been quiet for the ping interval (no timer, no task)."""

    transport_name = "sse"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream = SseEventStream(self, self._write)
        self.started = False  # the 200 and its headers are sent
        # The client stopped reading and even `closed` could not be written: give up on it.
        self.abandoned = False

    async def __call__(self, scope, receive, send):
        self.scope, self.channel_layer, self.base_send = scope, get_channel_layer(), send
        try:
            if await self._open(receive):
                await self._until_disconnected(receive)
        except StopConsumer:
            pass
        finally:
            self.closing = True
            await self.forget()

    async def _until_disconnected(self, receive) -> None:
        # uvicorn answers http.disconnect when the client goes away or once the response is
        # complete (close_with): either way, this connection is over.
        interval = settings.NOTIFICATIONS_SSE_PING_INTERVAL
        while True:
            try:
                async with asyncio.timeout(interval):
                    message = await receive()
            except TimeoutError:
                if self.abandoned:
                    # Returning unfinished makes uvicorn close the connection (it logs that
                    # the response was not completed): the client resumes as after a drop.
                    return
                await self._ping()
                continue
            if message["type"] == "http.disconnect":
                break
        if not self.closing:
            self.closing = True
            telemetry.socket_closing(self, 1000)  # the client closed its EventSource

    async def _write(self, text: str) -> None:
        await self.base_send(
            {"type": "http.response.body", "body": text.encode(), "more_body": True}
        )

    # --- opening ----------------------------------------------------------------------------

    async def _open(self, receive) -> bool:
        """Authenticate the request and start the stream; False when it was answered instead."""
        if (await receive())["type"] == "http.disconnect":
            return False
        try:
            credentials, last_event_id = self._read_request()
            refused = registry.admit(self)
            if refused is not None:
                telemetry.socket_refused(refused, self.scope, self.transport_name)
                raise Refused(429, {"detail": "Too many connections, retry later."}, refused)
            return await self._authenticate(credentials, last_event_id)
        except Refused as refusal:
            if refusal.status == 401:
                telemetry.auth_failed(refusal.reason, self.transport_name)
            await self.membership.discard()
            await self._answer(refusal.status, refusal.body)
            return False

    def _read_request(self) -> tuple[tuple[str, str], int | None]:
        """(("bearer" | "ticket", value), last_event_id) of the request, or Refused."""
        if self.scope["method"] != "GET":
            raise Refused(405, {"detail": f'Method "{self.scope["method"]}" not allowed.'})
        headers: dict[bytes, list[bytes]] = {}
        for name, value in self.scope["headers"]:
            headers.setdefault(name, []).append(value)
        origins = headers.get(b"origin", [])
        if len(origins) > 1 or not origin_allowed(origins[0] if origins else None):
            raise Refused(403, {"detail": "This origin may not open the event stream."})
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        last_event_id = _last_event_id(
            [v.decode("latin-1") for v in headers.get(b"last-event-id", [])]
            or query.get("last_event_id", [])
        )
        authorization = b" ".join(headers.get(b"authorization", [])).decode("latin-1").split()
        if authorization:
            if len(authorization) != 2 or authorization[0].lower() != "bearer":
                raise _unauthorized(
                    "bad_authorization_header", "Use Authorization: Bearer <access>."
                )
            return ("bearer", authorization[1]), last_event_id
        tickets = query.get("ticket", [])
        if len(tickets) == 1 and tickets[0]:
            return ("ticket", tickets[0]), last_event_id
        raise _unauthorized(
            "no_credentials",
            "Authentication credentials were not provided: a Bearer header or ?ticket=.",
        )

    async def _authenticate(self, credentials: tuple[str, str], last_event_id) -> bool:
        kind, value = credentials
        if kind == "bearer":
            try:
                validated, user_id = validate_access_token(value)
            except TokenRejected as exc:
                raise _unauthorized(exc.reason, "The access token is not valid.") from None
        else:
            ticket = await database_sync_to_async(stream_ticket_redeem)(ticket=value)
            if ticket is None:
                raise _unauthorized("bad_ticket", "The ticket is unknown, used or expired.")
            validated, user_id = None, ticket.user_id
        # Held until the replay is sent: live events wait behind "connected" and the replay.
        async with self.stream.lock:
            # Join before reading the store, as the socket does: no gap between the two.
            await self.membership.join(self.channel_layer, user_group_name(user_id))
            user, resume = await selectors.connecting_user((user_id, last_event_id))
            if validated is not None:
                try:
                    auth = authenticate_loaded_user(validated, user)
                except TokenRejected as exc:
                    raise _unauthorized(exc.reason, "The access token is not valid.") from None
                claims = policy_claims(validated)
            else:
                claims = policy_claims_of(ticket.claims)
                if (
                    user is None
                    or ticket.token_expires_at <= timezone.now()
                    or not claims_pass(claims, user)
                ):
                    raise _unauthorized("ticket_revoked", "The ticket's token is no longer valid.")
                auth = AuthenticatedToken(user=user, expires_at=ticket.token_expires_at)
            if self.closing:  # closed meanwhile (shutdown): the `closed` event is sent
                return True
            await self._start_response()
            await self.subscribed(auth, claims, resume, last_event_id)
        return True

    async def _start_response(self) -> None:
        self.started = True
        await self.base_send(
            {"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS}
        )
        self.stream.write_at_once = compat.chunk_writer(self.base_send)
        telemetry.socket_accepted(self)

    async def _answer(self, status: int, body: dict) -> None:
        content = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="api"'))
        elif status == 429:
            headers.append((b"retry-after", b"1"))
        await self.base_send({"type": "http.response.start", "status": status, "headers": headers})
        await self.base_send({"type": "http.response.body", "body": content})

    # --- heartbeat and closing --------------------------------------------------------------

    async def _ping(self) -> None:
        # A comment line: EventSource ignores it, proxies see traffic and keep the stream.
        async with self.stream.lock:
            await self.stream.send_text(PING)

    async def close_with(self, code: int) -> None:
        """End the stream with `event: closed` carrying `code`, once; later calls do nothing."""
        if self.closing:
            return
        self.closing = True
        self.timer.cancel()
        telemetry.socket_closing(self, code)
        closed = f'event: closed\ndata: {{"code": {int(code)}}}\n\n'.encode()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if not self.started:
                    await self._start_response()
                await self.base_send({"type": "http.response.body", "body": closed})
        except TimeoutError:
            # The client stopped reading (4010): leave the registry and the group now; the
            # loop ends the connection at its next wake-up.
            logger.info("sse client too slow to take its close (user %s)", self.user_id)
            self.abandoned = True
            await self.membership.discard()
            registry.remove(self)
        except Exception:
            logger.debug("close after the stream went away", exc_info=True)


def _last_event_id(values: list[str]) -> int | None:
    if not values:
        return None
    value = values[0].strip()
    if len(values) > 1 or not value.isascii() or not value.isdigit() or len(value) > 18:
        raise Refused(400, {"last_event_id": ["A non-negative integer is required."]})
    return int(value)
