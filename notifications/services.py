"""Operator actions on the event stream (test events, retention) and the tickets that open a
stream over server-sent events."""

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from notifications.events import EventType, parse_event_type, sample_data
from notifications.models import Event, StreamTicket
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


def _ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def stream_ticket_issue(
    *, user_id: uuid.UUID, claims: dict, token_expires_at: datetime
) -> tuple[str, datetime]:
    """A new single-use ticket for the user's event stream and when it expires
    (NOTIFICATIONS_SSE_TICKET_TTL from now, never after the token that asked for it)."""
    now = timezone.now()
    expires_at = min(
        now + timedelta(seconds=settings.NOTIFICATIONS_SSE_TICKET_TTL), token_expires_at
    )
    ticket = secrets.token_urlsafe(32)
    # Tickets of the past are deleted by those of the present: no sweeper to run.
    StreamTicket.objects.filter(expires_at__lt=now).delete()
    StreamTicket.objects.create(
        digest=_ticket_digest(ticket),
        user_id=user_id,
        claims=claims,
        token_expires_at=token_expires_at,
        expires_at=expires_at,
    )
    return ticket, expires_at


def stream_ticket_redeem(*, ticket: str) -> StreamTicket | None:
    """Use up a ticket: its row when it was issued, unused and unexpired, else None. Of two
    requests with one ticket, on any server process, at most one gets the row."""
    digest = _ticket_digest(ticket)
    found = StreamTicket.objects.filter(digest=digest, expires_at__gt=timezone.now()).first()
    if found is None:
        return None
    deleted, _ = StreamTicket.objects.filter(digest=digest).delete()
    return found if deleted else None
