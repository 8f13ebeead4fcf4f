"""Reads of the event store, always scoped to one user."""

import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection

from notifications.models import Event, EventCounter

# The user fields the token policy reads (reasonflow.users.authentication.check_user).
_POLICY_FIELDS = ("id", "is_active", "password", "token_version")


def event_latest_id_for_user(*, user_id: uuid.UUID) -> int:
    """The user's newest event id (0 when they have none).

    Raw SQL: every connect reads it, and building the ORM query cost more than running it.
    """
    counter = connection.ops.quote_name(EventCounter._meta.db_table)
    user = EventCounter._meta.pk.target_field.get_db_prep_value(user_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT last_event_id FROM {counter} WHERE user_id = %s", [user])  # noqa: S608
        row = cursor.fetchone()
    return row[0] if row else 0


def event_latest_ids_for_users(*, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The newest event id of each of these users that has any event."""
    return dict(
        EventCounter.objects.filter(user_id__in=user_ids).values_list("user_id", "last_event_id")
    )


def event_list_for_user(
    *, user_id: uuid.UUID, after: int, limit: int, up_to: int | None = None
) -> list[Event]:
    """The user's kept events with after < id (<= up_to), oldest first, at most `limit`."""
    events = Event.objects.filter(user_id=user_id, sequence__gt=after)
    if up_to is not None:
        events = events.filter(sequence__lte=up_to)
    return list(events.order_by("sequence")[:limit])


def user_with_latest_event_id(*, user_id: uuid.UUID):
    """The user (only the fields the token policy reads; None when there is none) and their
    newest event id, in one query: the whole database visit of a connecting socket."""
    user_model = get_user_model()
    quote = connection.ops.quote_name
    meta = user_model._meta
    columns = ", ".join(f"u.{quote(meta.get_field(name).column)}" for name in _POLICY_FIELDS[1:])
    sql = (
        f"SELECT {columns}, c.last_event_id FROM {quote(meta.db_table)} u "  # noqa: S608
        f"LEFT JOIN {quote(EventCounter._meta.db_table)} c "
        f"ON c.{quote(EventCounter._meta.pk.column)} = u.{quote(meta.pk.column)} "
        f"WHERE u.{quote(meta.pk.column)} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [meta.pk.get_db_prep_value(user_id, connection)])
        row = cursor.fetchone()
    if row is None:
        return None, 0
    *policy_values, latest = row
    loaded = dict(zip(_POLICY_FIELDS, (user_id, *policy_values), strict=True))
    loaded["is_active"] = bool(loaded["is_active"])  # SQLite returns 0/1
    # from_db() takes the loaded values in the model's field order.
    names = [field.attname for field in meta.concrete_fields if field.attname in loaded]
    user = user_model.from_db(connection.alias, names, [loaded[name] for name in names])
    return user, latest or 0


@dataclass(frozen=True)
class ResumePoint:
    latest_id: int
    recovered: bool


def event_resume_point_for_user(
    *, user_id: uuid.UUID, last_event_id: int | None, latest_id: int | None = None
) -> ResumePoint:
    """Whether every event after `last_event_id` is still kept, and the newest id (read here
    unless the caller has just read it as `latest_id`).

    Not recovered when the next event was pruned, or when the client claims an id this store
    never issued (a reset database): either way it must reload its state.
    """
    latest = event_latest_id_for_user(user_id=user_id) if latest_id is None else latest_id
    if last_event_id is None or last_event_id == latest:
        return ResumePoint(latest_id=latest, recovered=True)
    if last_event_id > latest:
        return ResumePoint(latest_id=latest, recovered=False)
    next_kept = Event.objects.filter(user_id=user_id, sequence=last_event_id + 1).exists()
    return ResumePoint(latest_id=latest, recovered=next_kept)
