"""publish_event(): store an event when the caller's transaction commits, deliver it after.

The seam every producer imports: it loads the catalogue, the store and metric counters, and
nothing of the socket runtime. Delivery (delivery.py, the only caller of `group_send`) never
blocks or fails the caller: the stored event is the source of truth and connections replay or
gap-fill from it, so a channel layer that is down or slow costs latency for live sockets, never
a lost event or a failed request.
"""

import functools
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from notifications import compat
from notifications.delivery import deliver
from notifications.events import EventType, build_payload
from notifications.models import Event, EventCounter, dump_json, envelope_json
from notifications.operations import metrics

MESSAGE_TYPE = "notification.event"
REVOKE_TYPE = "notification.revoke"


def user_group_name(user_id: uuid.UUID | str) -> str:
    """The channel-layer group every connection of this user joins."""
    if not isinstance(user_id, uuid.UUID):
        user_id = uuid.UUID(str(user_id))
    return f"events.{user_id}"


def publish_event(
    *, user_id: uuid.UUID | str, event_type: EventType | str, data: dict[str, Any]
) -> Event:
    """Store the event when the current transaction commits and send it to the user's sockets
    after that; in autocommit mode, store and send it at once.

    Inside a transaction the returned Event's `event_id`, `id` and `created_at` are None until
    the transaction commits: the user's next number is taken just before the commit, with every
    other event of the transaction, in user order (docs/publishing.md). Raises
    EventPayloadError when `data` does not match the catalogue, ImproperlyConfigured when the
    database backend has no before-commit hook.
    """
    payload = build_payload(event_type, data)
    connection = connections[DEFAULT_DB_ALIAS]
    if not isinstance(connection, compat.RunsHooksBeforeCommit):
        raise ImproperlyConfigured(
            "publish_event() needs one of the project's database backends, "
            "reasonflow.db.backends.postgresql or reasonflow.db.backends.sqlite3 (see "
            f"PROJECT_ENGINES in reasonflow/settings.py), not {type(connection).__module__}: "
            "they store a transaction's events just before it commits, in user order, so that "
            "producers never deadlock on the per-user counters."
        )
    if not isinstance(user_id, uuid.UUID):
        user_id = uuid.UUID(str(user_id))
    pending = _PendingEvent(
        Event(user_id=user_id, type=str(event_type), data=payload),
        dump_json(payload),
    )
    if compat.in_committing_transaction(connection):
        transaction.on_commit(pending, robust=True)
    elif not connection.in_atomic_block:
        # Autocommit: a transaction of its own, stored by the same before-commit hook.
        with transaction.atomic():
            transaction.on_commit(pending, robust=True)
    else:
        # Only a TestCase's blocks, which never commit: store now, as a commit would.
        _PendingEvent.before_commit(connection, [pending])
        transaction.on_commit(pending, robust=True)
    return pending.event


class _PendingEvent:
    """One published event: stored by `before_commit` with the transaction's other events,
    then, called as an on_commit hook, handed to the channel layer."""

    # Django names a robust hook that raised by its __qualname__, which an instance lacks:
    # without one, a failed delivery became an AttributeError in the caller.
    __slots__ = ("__qualname__", "data_json", "event", "published_at")

    def __init__(self, event: Event, data_json: str) -> None:
        self.__qualname__ = "publish_event delivery"
        self.event = event
        self.data_json = data_json
        self.published_at = time.time()  # for the publish-to-socket latency metric

    @staticmethod
    def before_commit(connection, pending: list["_PendingEvent"], commit: bool = False) -> None:
        unstored = [p for p in pending if p.event.event_id is None]
        if unstored:
            _store_events(connection, unstored, commit=commit)

    # The store statement may end with the COMMIT (compat.run_before_commit): a round trip
    # less for every transaction that publishes.
    before_commit.__func__.commits_with_last_statement = True

    def __call__(self) -> None:
        event = self.event
        if event.event_id is None:
            raise RuntimeError(
                f"{event.type} event for {event.user_id} reached delivery unstored: its "
                "transaction committed without the before-commit hook (notifications.compat)"
            )
        _published_counter(event.type).inc()
        message = {
            "type": MESSAGE_TYPE,
            "user_id": str(event.user_id),
            "event_id": event.event_id,
            "event_type": event.type,  # a transport that names each frame (SSE) reads it here
            "envelope": envelope_json(
                event_id=event.event_id,
                event_type=event.type,
                user_id=event.user_id,
                data_json=self.data_json,
                created_at=event.created_at,
            ),
            "published_at": self.published_at,
        }
        deliver(user_group_name(event.user_id), message)


@functools.cache
def _published_counter(event_type: str):
    # prometheus_client's labels() validates and locks on every call.
    return metrics.EVENTS_PUBLISHED.labels(type=event_type)


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


# Every user's counter is bumped by their number of events in one statement, in user order: two
# transactions then always take the counter row locks they share in the same order, so they
# wait for each other but never deadlock. Each lock is held until the commit that follows, so
# a user's numbers are gapless (a failed commit returns them) and commit in event id order.
# The timestamp is read once the lock is held: a user's timestamps grow with the event id.
_STORE_EVENTS_SQL_POSTGRES = (
    "WITH next AS ("
    "INSERT INTO {counter} AS counter (user_id, last_event_id) "
    "SELECT user_id, n FROM unnest(%s::uuid[], %s::bigint[]) AS batch(user_id, n) "
    "ORDER BY user_id "
    "ON CONFLICT (user_id) DO UPDATE "
    "SET last_event_id = counter.last_event_id + EXCLUDED.last_event_id "
    "RETURNING user_id, last_event_id, clock_timestamp() AS created_at) "
    "INSERT INTO {event} (user_id, event_id, type, data, created_at) "
    "SELECT user_id, next.last_event_id - e.before_last, e.type, e.data::jsonb, next.created_at "
    "FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::text[]) "
    "AS e(user_id, before_last, type, data) JOIN next USING (user_id) "
    "RETURNING id, user_id, event_id, {created_at_micros}"
)
# The same for a transaction that published one event (a request, a signal): plain parameters
# cost the producer less than arrays.
_STORE_ONE_EVENT_SQL_POSTGRES = (
    "WITH next AS ("
    "INSERT INTO {counter} AS counter (user_id, last_event_id) VALUES (%s, 1) "
    "ON CONFLICT (user_id) DO UPDATE SET last_event_id = counter.last_event_id + 1 "
    "RETURNING last_event_id) "
    "INSERT INTO {event} (user_id, event_id, type, data, created_at) "
    "SELECT %s, last_event_id, %s, %s::jsonb, clock_timestamp() FROM next "
    "RETURNING id, event_id, {created_at_micros}"
)
# The timestamp comes back as microseconds since the epoch, exact (extract() is numeric from
# PostgreSQL 14, the oldest Django 5.2 supports), instead of a timestamptz that Django's loader
# would parse from text in Python.
_CREATED_AT_MICROS = "(extract(epoch FROM created_at) * 1000000)::bigint"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stored_at(micros: int) -> datetime:
    """The created_at that _CREATED_AT_MICROS returned, as an aware datetime."""
    return _EPOCH + timedelta(microseconds=micros)


_BUMP_COUNTER_SQL = (
    "INSERT INTO {counter} (user_id, last_event_id) VALUES (%s, %s) "
    "ON CONFLICT (user_id) DO UPDATE SET last_event_id = {counter}.last_event_id + %s "
    "RETURNING last_event_id"
)
_INSERT_EVENT_SQL = (
    "INSERT INTO {event} (user_id, event_id, type, data, created_at) "
    "VALUES (%s, %s, %s, %s, %s) RETURNING id"
)


def _store_events(connection, pending: list[_PendingEvent], *, commit: bool = False) -> None:
    """Insert the events with their users' next event ids, users in canonical (uuid) order, and
    fill in each Event's id, event_id and created_at. Raw SQL on the driver's own cursor: every
    commit that published runs it. With `commit` on PostgreSQL, the statement commits the
    transaction too (its values quoted into it, as Django's own cursor sends them)."""
    tables = {
        "counter": connection.ops.quote_name(EventCounter._meta.db_table),
        "event": connection.ops.quote_name(Event._meta.db_table),
        "created_at_micros": _CREATED_AT_MICROS,
    }
    by_user: dict[uuid.UUID, list[_PendingEvent]] = {}
    for item in pending:
        by_user.setdefault(item.event.user_id, []).append(item)
    users = sorted(by_user)
    if connection.vendor != "postgresql":
        _store_events_one_by_one(connection, tables, users, by_user)
        return
    then_commit = "; COMMIT" if commit else ""
    with compat.driver_cursor(connection, many_statements=commit) as cursor:
        if len(pending) == 1:
            [item] = pending
            user = item.event.user_id
            cursor.execute(
                _STORE_ONE_EVENT_SQL_POSTGRES.format(**tables) + then_commit,
                [user, user, item.event.type, item.data_json],
            )
            row_id, event_id, micros = cursor.fetchone()
            _fill(item.event, connection, row_id, event_id, _stored_at(micros))
            return
        event_users, before_last, types, datas = [], [], [], []
        for user in users:
            items = by_user[user]
            for position, item in enumerate(items, 1):
                event_users.append(user)
                before_last.append(len(items) - position)
                types.append(item.event.type)
                datas.append(item.data_json)
        cursor.execute(
            _STORE_EVENTS_SQL_POSTGRES.format(**tables) + then_commit,
            [users, [len(by_user[user]) for user in users], event_users, before_last, types, datas],
        )
        stored: dict[uuid.UUID, list[tuple]] = {}
        for row_id, user, event_id, micros in cursor.fetchall():
            stored.setdefault(user, []).append((event_id, row_id, _stored_at(micros)))
    for user in users:
        for item, (event_id, row_id, created_at) in zip(
            by_user[user], sorted(stored[user]), strict=True
        ):
            _fill(item.event, connection, row_id, event_id, created_at)


def _store_events_one_by_one(connection, tables: dict, users: list, by_user: dict) -> None:
    """SQLite (development): a counter bump per user, then an insert per event."""
    with connection.cursor() as cursor:
        for user in users:
            items = by_user[user]
            db_user = EventCounter._meta.pk.target_field.get_db_prep_value(user, connection)
            cursor.execute(_BUMP_COUNTER_SQL.format(**tables), [db_user, len(items), len(items)])
            last_event_id = cursor.fetchone()[0]
            created_at = timezone.now()  # after the counter's lock: grows with the event id
            db_created_at = connection.ops.adapt_datetimefield_value(created_at)
            for event_id, item in enumerate(items, last_event_id - len(items) + 1):
                cursor.execute(
                    _INSERT_EVENT_SQL.format(**tables),
                    [db_user, event_id, item.event.type, item.data_json, db_created_at],
                )
                _fill(item.event, connection, cursor.fetchone()[0], event_id, created_at)


def _fill(event: Event, connection, row_id: int, event_id: int, created_at) -> None:
    event.id, event.event_id, event.created_at = row_id, event_id, created_at
    event._state.adding, event._state.db = False, connection.alias  # stored above
