"""publish_event(): store an event in the caller's transaction, deliver it after commit.

The seam every producer imports: it loads the catalogue, the store and metric counters, and
nothing of the socket runtime. Delivery (delivery.py, the only caller of `group_send`) never
blocks or fails the caller: the stored event is the source of truth and connections replay or
gap-fill from it, so a channel layer that is down or slow costs latency for live sockets, never
a lost event or a failed request.
"""

import time
import uuid
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from notifications.delivery import deliver
from notifications.events import EventType, build_payload
from notifications.models import Event, EventCounter, dump_json, envelope_json
from notifications.operations import metrics

MESSAGE_TYPE = "notification.event"
REVOKE_TYPE = "notification.revoke"


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
        row_id, event_id, created_at = _store_event(user_uuid, event_type, data_json)
        event = Event(
            id=row_id,
            user_id=user_uuid,
            event_id=event_id,
            type=event_type,
            data=payload,
            created_at=created_at,
        )
        event._state.adding, event._state.db = False, connection.alias  # stored above
        message = {
            "type": MESSAGE_TYPE,
            "user_id": str(user_uuid),
            "event_id": event_id,
            "envelope": envelope_json(
                event_id=event_id,
                event_type=event_type,
                user_id=user_uuid,
                data_json=data_json,
                created_at=created_at,
            ),
            "published_at": time.time(),  # for the publish-to-socket latency metric
        }
        transaction.on_commit(lambda: deliver(user_group_name(user_uuid), message), robust=True)
        transaction.on_commit(
            lambda: metrics.EVENTS_PUBLISHED.labels(type=event.type).inc(), robust=True
        )
    return event


def revoke_connections(*, user_id: uuid.UUID | str) -> None:
    """Close every live socket of the user (4002) on every server process, after commit."""
    group = user_group_name(user_id)
    message = {"type": REVOKE_TYPE, "user_id": str(uuid.UUID(str(user_id)))}
    transaction.on_commit(lambda: deliver(group, message), robust=True)


async def apublish_event(
    *, user_id: uuid.UUID | str, event_type: EventType | str, data: dict[str, Any]
) -> Event:
    """publish_event() for async callers; the database work runs in a worker thread."""
    return await database_sync_to_async(publish_event)(
        user_id=user_id, event_type=event_type, data=data
    )


_NEXT_EVENT_ID_SQL = (
    "INSERT INTO {counter} (user_id, last_event_id) VALUES (%s, 1) "
    "ON CONFLICT (user_id) DO UPDATE SET last_event_id = {counter}.last_event_id + 1 "
    "RETURNING last_event_id"
)
_INSERT_EVENT_SQL = (
    "INSERT INTO {event} (user_id, event_id, type, data, created_at) "
    "VALUES (%s, %s, %s, %s, %s) RETURNING id"
)
# PostgreSQL does both in one round trip; the timestamp is read after the counter's row lock
# is taken, so a user's timestamps grow with the event id.
_STORE_EVENT_SQL_POSTGRES = (
    "WITH next AS (" + _NEXT_EVENT_ID_SQL + ") "  # noqa: S608 - constants and table names
    "INSERT INTO {event} (user_id, event_id, type, data, created_at) "
    "SELECT %s, last_event_id, %s, %s::jsonb, clock_timestamp() FROM next "
    "RETURNING id, event_id, created_at"
)


def _store_event(user_id: uuid.UUID, event_type: str, data_json: str) -> tuple[int, int, datetime]:
    """Insert the event with the user's next event id; return (row id, event id, created_at).

    The counter upsert allocates the number and takes the counter row's lock, held until the
    caller's transaction ends: numbers are gapless (a rollback returns them) and a user's
    events commit in event id order. Raw SQL: this is the hot path of every publisher.
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
        cursor.execute(_NEXT_EVENT_ID_SQL.format(**tables), [user])
        event_id = cursor.fetchone()[0]
        created_at = timezone.now()  # after the row lock: timestamps grow with the event id
        cursor.execute(
            _INSERT_EVENT_SQL.format(**tables),
            [
                user,
                event_id,
                event_type,
                data_json,
                connection.ops.adapt_datetimefield_value(created_at),
            ],
        )
        return cursor.fetchone()[0], event_id, created_at
