"""publish_event(): store an event in the caller's transaction, deliver it after commit.

This module is the only caller of `group_send`. Delivery never blocks or fails the caller: the
stored event is the source of truth and connections replay or gap-fill from it, so a channel
layer that is down or slow costs latency for live sockets, never a lost event or a failed request.
"""

import asyncio
import atexit
import collections
import logging
import os
import threading
import time
import uuid
import weakref
from datetime import datetime
from typing import Any

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.utils import timezone

from notifications.events import EventType, build_payload
from notifications.models import Event, EventCounter, dump_json, envelope_json
from notifications.realtime import telemetry

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "notification.event"
REVOKE_TYPE = "notification.revoke"
# Sends waiting for a slow or unreachable channel layer, per event loop; past this the oldest
# are dropped (the events are stored, so sockets gap-fill or replay them).
MAX_QUEUED_SENDS = 10_000
SEND_BATCH = 256  # sends per pipelined round trip


def user_group_name(user_id: uuid.UUID | str) -> str:
    """The channel-layer group every connection of this user joins."""
    return f"events.{uuid.UUID(str(user_id))}"


def publish_event(
    *, user_id: uuid.UUID | str, event_type: EventType | str, data: dict[str, Any]
) -> Event:
    """Store the event in the current transaction and send it to the user's sockets on commit.

    Raises EventPayloadError when `data` does not match the catalogue.
    """
    payload = build_payload(event_type, data)
    user_uuid = uuid.UUID(str(user_id))
    event_type = str(event_type)
    data_json = dump_json(payload)
    with transaction.atomic(savepoint=False):
        event_id, sequence, created_at = _store_event(user_uuid, event_type, data_json)
        event = Event(
            id=event_id,
            user_id=user_uuid,
            sequence=sequence,
            type=event_type,
            data=payload,
            created_at=created_at,
        )
        event._state.adding, event._state.db = False, connection.alias  # stored above
        message = {
            "type": MESSAGE_TYPE,
            "user_id": str(user_uuid),
            "event_id": sequence,
            "envelope": envelope_json(
                sequence=sequence,
                event_type=event_type,
                user_id=user_uuid,
                data_json=data_json,
                created_at=created_at,
            ),
            "published_at": time.time(),  # for the publish-to-socket latency metric
        }
        transaction.on_commit(lambda: _deliver(user_group_name(user_uuid), message), robust=True)
        transaction.on_commit(lambda: telemetry.event_published(event.type), robust=True)
    return event


def revoke_connections(*, user_id: uuid.UUID | str) -> None:
    """Close every live socket of the user (4002) on every server process, after commit."""
    group = user_group_name(user_id)
    message = {"type": REVOKE_TYPE, "user_id": str(uuid.UUID(str(user_id)))}
    transaction.on_commit(lambda: _deliver(group, message), robust=True)


async def apublish_event(
    *, user_id: uuid.UUID | str, event_type: EventType | str, data: dict[str, Any]
) -> Event:
    """publish_event() for async callers; the database work runs in a worker thread."""
    return await database_sync_to_async(publish_event)(
        user_id=user_id, event_type=event_type, data=data
    )


_NEXT_SEQUENCE_SQL = (
    "INSERT INTO {counter} (user_id, last_event_id) VALUES (%s, 1) "
    "ON CONFLICT (user_id) DO UPDATE SET last_event_id = {counter}.last_event_id + 1 "
    "RETURNING last_event_id"
)
_INSERT_EVENT_SQL = (
    "INSERT INTO {event} (user_id, sequence, type, data, created_at) "
    "VALUES (%s, %s, %s, %s, %s) RETURNING id"
)
# PostgreSQL does both in one round trip; the timestamp is read after the counter's row lock
# is taken, so a user's timestamps grow with the sequence.
_STORE_EVENT_SQL_POSTGRES = (
    "WITH next AS (" + _NEXT_SEQUENCE_SQL + ") "  # noqa: S608 - constants and table names
    "INSERT INTO {event} (user_id, sequence, type, data, created_at) "
    "SELECT %s, last_event_id, %s, %s::jsonb, clock_timestamp() FROM next "
    "RETURNING id, sequence, created_at"
)


def _store_event(user_id: uuid.UUID, event_type: str, data_json: str) -> tuple[int, int, datetime]:
    """Insert the event with the user's next sequence number; return (id, sequence, created_at).

    The counter upsert allocates the number and takes the counter row's lock, held until the
    caller's transaction ends: numbers are gapless (a rollback returns them) and a user's
    events commit in sequence order. Raw SQL: this is the hot path of every publisher.
    """
    tables = {
        "counter": connection.ops.quote_name(EventCounter._meta.db_table),
        "event": connection.ops.quote_name(Event._meta.db_table),
    }
    user = EventCounter._meta.pk.target_field.get_db_prep_value(user_id, connection)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                _STORE_EVENT_SQL_POSTGRES.format(**tables),
                [user, user, event_type, data_json],
            )
            return cursor.fetchone()
        cursor.execute(_NEXT_SEQUENCE_SQL.format(**tables), [user])
        sequence = cursor.fetchone()[0]
        created_at = timezone.now()  # after the row lock: timestamps grow with the sequence
        cursor.execute(
            _INSERT_EVENT_SQL.format(**tables),
            [
                user,
                sequence,
                event_type,
                data_json,
                connection.ops.adapt_datetimefield_value(created_at),
            ],
        )
        return cursor.fetchone()[0], sequence, created_at


# --- delivery --------------------------------------------------------------------------------


def _deliver(group: str, message: dict) -> None:
    loop = _server_event_loop() or _background_loop.get()
    loop.call_soon_threadsafe(_sender_for(loop).enqueue, group, message)


def _server_event_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's loop when this thread runs sync code on its behalf (sync_to_async).

    Sending from that loop reuses its channel-layer connections (and is the only way to reach
    the in-memory layer's sockets) instead of opening a new loop and connection per call.
    """
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop if loop.is_running() and not loop.is_closed() else None


class _LoopSender:
    """Sends queued messages from one event loop, one at a time, in the order published."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[tuple[str, dict]] = collections.deque()
        self.worker: asyncio.Task | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def enqueue(self, group: str, message: dict) -> None:
        if len(self.queue) >= MAX_QUEUED_SENDS:
            dropped_group, dropped = self.queue.popleft()
            logger.warning(
                "channel layer backlog full: live send of %s to %s dropped; kept for replay",
                dropped.get("event_id", dropped["type"]),
                dropped_group,
            )
        self.queue.append((group, message))
        self.idle.clear()
        if self.worker is None or self.worker.done():
            self.worker = self.loop.create_task(self._run())

    async def _run(self) -> None:
        layer = get_channel_layer()
        # The pub/sub layer pipelines a backlog: one round trip for many sends.
        send_many = getattr(layer, "group_send_many", None)
        while self.queue:
            if send_many is None:
                batch = [self.queue.popleft()]
                send = layer.group_send(*batch[0])
            else:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), SEND_BATCH))]
                send = send_many(batch)
            try:
                await send
            except Exception:
                # The events are stored: sockets will gap-fill or replay them.
                for _, message in batch:
                    telemetry.channel_layer_send_failed()
                    logger.warning(
                        "channel layer send failed for event %s of %s; kept for replay",
                        message.get("event_id"),
                        message.get("user_id"),
                        exc_info=True,
                    )
        self.idle.set()

    async def drain(self) -> None:
        await self.idle.wait()


_senders: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSender]" = (
    weakref.WeakKeyDictionary()
)
_senders_lock = threading.Lock()


def _sender_for(loop: asyncio.AbstractEventLoop) -> _LoopSender:
    with _senders_lock:
        sender = _senders.get(loop)
        if sender is None:
            sender = _senders[loop] = _LoopSender(loop)
        return sender


class _BackgroundLoop:
    """A daemon thread with one long-lived event loop, for publishers outside any ASGI server
    (management commands, task workers, plain scripts)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="notifications-publisher", daemon=True
                ).start()
            return self._loop

    def drain(self, timeout: float) -> bool:
        loop = self._loop
        if loop is None or not loop.is_running():
            return True
        future = asyncio.run_coroutine_threadsafe(_sender_for(loop).drain(), loop)
        try:
            future.result(timeout)
        except TimeoutError:
            return False
        return True


_background_loop = _BackgroundLoop()


def flush_deliveries(timeout: float = 5.0) -> bool:
    """Wait until events published from sync code outside a server have been handed to the
    channel layer. Returns False on timeout. Called at exit so a command loses no live send."""
    return _background_loop.drain(timeout)


async def aflush_deliveries() -> None:
    """Wait until events queued on the running loop have been handed to the channel layer."""
    await _sender_for(asyncio.get_running_loop()).drain()


atexit.register(flush_deliveries)
