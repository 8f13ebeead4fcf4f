"""Operator actions on the event stream: test events and retention."""

import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from notifications.events import EventType, parse_event_type, sample_data
from notifications.models import Event
from notifications.publish import publish_event


def event_send_sample(
    *, user_id: uuid.UUID, event_type: EventType | str, data: dict[str, Any] | None = None
) -> Event:
    """Publish a well-formed event of `event_type` to the user; `data` defaults to a sample.

    Raises EventPayloadError for an unknown type or data that does not match the catalogue.
    """
    event_type = parse_event_type(event_type)
    return publish_event(
        user_id=user_id,
        event_type=event_type,
        data=sample_data(event_type) if data is None else data,
    )


def event_prune(*, older_than=None) -> int:
    """Delete events older than NOTIFICATIONS_RETENTION (or `older_than`); return how many.

    Sequence counters are kept, so ids are never reused after a prune.
    """
    # `is None`, not `or`: a zero override (prune everything) is falsy but deliberate.
    retention = settings.NOTIFICATIONS_RETENTION if older_than is None else older_than
    cutoff = timezone.now() - retention
    deleted, _ = Event.objects.filter(created_at__lt=cutoff).delete()
    return deleted
