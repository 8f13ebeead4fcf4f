"""EventStream: one connection's ordered, gap-free stream of its user's events.

It knows the last event id sent, sends one frame at a time (live events, replays and catch-ups
all go through one lock, so ids never interleave), fills a gap from the store before sending an
event that skips ahead, and closes the connection 4010 when the client does not take a frame
within the send timeout. It knows nothing of WebSockets: a transport gives it `write(text)`
(an awaitable that writes one frame) and a connection with `closing` and `close_with(code)`;
a transport whose frames are not the bare JSON (server-sent events, sse.py) overrides
`event_frame` and `control_frame`.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from django.conf import settings

from notifications import compat, selectors
from notifications.close_codes import CloseCode
from notifications.publish import MESSAGE_TYPE
from notifications.realtime import telemetry
from notifications.realtime.database import read_from_database

logger = logging.getLogger(__name__)


class Connection(Protocol):
    closing: bool

    async def close_with(self, code: int) -> None: ...


class EventStream:
    def __init__(self, connection: Connection, write: Callable[[str], Awaitable]) -> None:
        self.connection = connection
        self.write = write
        # A transport may add one: writes a frame at once and says True, or says False.
        self.write_at_once: Callable[[str], bool] | None = None
        self.user_id = None
        self.user_key: str | None = None  # the user id as layer messages carry it
        self.last_event_id = 0
        # The newest id the delivery watch saw at its previous tick (connections.py).
        self.watched_event_id = 0
        # Live events, replays and the registry's catch-up all send store-ordered frames:
        # one at a time, so ids never interleave.
        self.lock = asyncio.Lock()

    def start(self, user_id, *, last_event_id: int) -> None:
        self.user_id, self.user_key, self.last_event_id = user_id, str(user_id), last_event_id

    def forward_at_once(self, message: dict):
        """Write the next event without a task when nothing else is sending: a task, a send
        timer and the lock per delivery were two thirds of a fan-out's server time.

        The transport's write_at_once writes the frame where it can; otherwise its write
        coroutine is run by hand: it finishes at once unless the client has stopped reading.
        Returns True when sent, False when the event must take the ordinary way (a gap to
        fill, a send in progress), or a coroutine that finishes the blocked send (lock and send
        timeout included) for the caller to run in a task.
        """
        if (
            message.get("type") != MESSAGE_TYPE
            or message.get("user_id") != self.user_key
            or message.get("event_id") != self.last_event_id + 1
            or self.lock.locked()
        ):
            return False
        frame = self.event_frame(message)
        if self.write_at_once is not None and self.write_at_once(frame):
            self._sent(message)  # written with nothing in between: no lock needed
            return True
        if not compat.acquired_at_once(self.lock):
            return False
        try:
            rest = compat.run_until_blocked(self.write(frame))
        except Exception:
            # Nothing was written: the ordinary way sends again and handles the failure.
            self.lock.release()
            return False
        if rest is None:
            self.lock.release()
            self._sent(message)
            return True
        return self._finish_write(rest, message)

    async def _finish_write(self, writing, message: dict) -> None:
        # Started by forward_at_once, which holds the lock for it.
        try:
            if await self._complete(writing):
                self._sent(message)
        finally:
            self.lock.release()

    async def deliver(self, message: dict) -> None:
        """Send a live event of the channel layer, after any the store has and it lacks."""
        # Under the lock before anything else: an event that arrives while the socket
        # authenticates waits for "connected" and the replay, then counts as this user's.
        async with self.lock:
            if self.connection.closing or message.get("user_id") != self.user_key:
                return
            event_id = message["event_id"]
            if event_id <= self.last_event_id:
                return  # already sent by a replay or a gap fill
            if event_id > self.last_event_id + 1:
                # The layer dropped or reordered something: the store has every committed event.
                telemetry.gap_filled()
                await self.send_from_store(up_to=event_id - 1)
            if await self.send_text(self.event_frame(message)):
                self._sent(message)

    def _sent(self, message: dict) -> None:
        self.last_event_id = message["event_id"]
        telemetry.event_delivered(message)

    async def replay(self, after: int) -> None:
        """Send every stored event after `after` (the caller holds the lock)."""
        self.last_event_id = after
        await self.send_from_store(up_to=None)
        telemetry.replayed(self.last_event_id - after)

    async def catch_up(self) -> None:
        """Send every stored event newer than the last one sent (the channel layer lost some)."""
        async with self.lock:
            if not self.connection.closing:
                await self.send_from_store(up_to=None)

    async def send_from_store(self, *, up_to: int | None) -> None:
        batch = settings.NOTIFICATIONS_REPLAY_BATCH
        while not self.connection.closing:
            events = await read_from_database(selectors.event_list_for_user)(
                user_id=self.user_id, after=self.last_event_id, limit=batch, up_to=up_to
            )
            for event in events:
                frame = self.stored_event_frame(event.event_id, event.type, event.envelope_json())
                if not await self.send_text(frame):
                    return
                self.last_event_id = event.event_id
            if len(events) < batch:
                return

    async def send_json(self, content: dict) -> bool:
        """Send a control frame ({"type": "connected" | "token_expiring" | ..., ...})."""
        return await self.send_text(self.control_frame(content))

    # --- frames: a socket sends the JSON itself -------------------------------------------

    def event_frame(self, message: dict) -> str:
        """The frame of a live event (a channel-layer message)."""
        return message["envelope"]

    def stored_event_frame(self, event_id: int, event_type: str, envelope: str) -> str:
        """The frame of an event read from the store."""
        return envelope

    def control_frame(self, content: dict) -> str:
        return json.dumps(content)

    async def send_text(self, text: str) -> bool:
        """Send one frame; a client that has not taken it within the send timeout is too
        slow: close 4010 (it resumes with last_event_id) rather than buffer without bound."""
        if self.connection.closing:
            return False
        return await self._complete(self.write(text))

    async def _complete(self, writing) -> bool:
        try:
            async with asyncio.timeout(settings.NOTIFICATIONS_SEND_TIMEOUT):
                await writing
        except TimeoutError:
            logger.info("websocket client too slow (user %s)", self.user_id)
            await self.connection.close_with(CloseCode.TOO_SLOW)
            return False
        return True
