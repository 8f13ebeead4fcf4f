"""Reads of the event store for producers and REST, always scoped to the users asked for."""

import uuid

from django.db import connection

from notifications.models import Event, EventCounter


def event_last_id_for_user(*, user_id: uuid.UUID) -> int:
    """The user's newest event id (0 when they have none).

    Raw SQL: every connect reads it, and building the ORM query cost more than running it.
    """
    counter = connection.ops.quote_name(EventCounter._meta.db_table)
    user = EventCounter._meta.pk.target_field.get_db_prep_value(user_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT last_event_id FROM {counter} WHERE user_id = %s", [user])  # noqa: S608
        row = cursor.fetchone()
    return row[0] if row else 0


def event_list_for_user(
    *, user_id: uuid.UUID, after: int, limit: int, up_to: int | None = None
) -> list[Event]:
    """The user's kept events with after < id (<= up_to), oldest first, at most `limit`."""
    events = Event.objects.filter(user_id=user_id, event_id__gt=after)
    if up_to is not None:
        events = events.filter(event_id__lte=up_to)
    return list(events.order_by("event_id")[:limit])
