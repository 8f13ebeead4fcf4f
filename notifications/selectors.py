"""Reads of the event store, always scoped to one user."""

import uuid
from dataclasses import dataclass

from django.db import connection

from notifications.models import Event, EventCounter


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


@dataclass(frozen=True)
class ResumePoint:
    latest_id: int
    recovered: bool


def event_resume_point_for_user(*, user_id: uuid.UUID, last_event_id: int | None) -> ResumePoint:
    """Whether every event after `last_event_id` is still kept, and the newest id.

    Not recovered when the next event was pruned, or when the client claims an id this store
    never issued (a reset database): either way it must reload its state.
    """
    latest = event_latest_id_for_user(user_id=user_id)
    if last_event_id is None or last_event_id == latest:
        return ResumePoint(latest_id=latest, recovered=True)
    if last_event_id > latest:
        return ResumePoint(latest_id=latest, recovered=False)
    next_kept = Event.objects.filter(user_id=user_id, sequence=last_event_id + 1).exists()
    return ResumePoint(latest_id=latest, recovered=next_kept)
