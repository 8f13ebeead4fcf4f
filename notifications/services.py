"""Operator actions on the event stream (test events, retention), the tickets that open a
stream over server-sent events, and the publish API's service keys and idempotent batches."""

import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from notifications import selectors
from notifications.events import EventType, parse_event_type, sample_data
from notifications.models import (
    PUBLISH_RECEIPT_LIFETIME,
    SERVICE_KEY_PREFIX,
    SERVICE_KEY_SHOWN,
    Event,
    PublishReceipt,
    ServiceKey,
    StreamTicket,
    dump_json,
    secret_digest,
)
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


# --- the publish API (PROTOCOL §6) -------------------------------------------------------------


@dataclass(frozen=True)
class PublishItem:
    """One event of a publish request, its user already looked up."""

    user_id: uuid.UUID
    event_type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Published:
    """What a publish answers: the envelopes, and whether they are a repeat's (an earlier
    publish with the same Idempotency-Key and body) rather than new events."""

    envelopes: list[dict[str, Any]]
    repeated: bool = False


MAX_PUBLISH_EVENTS = 500  # per request of the publish API (PROTOCOL §6)


class EventTypesRefused(Exception):
    """The service key may not publish these event types."""

    def __init__(self, types: list[str]) -> None:
        super().__init__(", ".join(types))
        self.types = types


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was already used, within its lifetime, for another body."""


class _AlreadyClaimed(Exception):
    """Another request with the same Idempotency-Key committed first."""


def service_key_create(
    *, name: str, event_types: list[str] | None = None
) -> tuple[ServiceKey, str]:
    """Create a key named `name`, limited to `event_types` when given; return it with its
    secret, which is stored only hashed: the caller shows it once.

    Raises EventPayloadError for a type the catalogue does not know.
    """
    types = sorted({parse_event_type(t).value for t in event_types or []})
    key = ServiceKey(name=name, event_types=types)
    return key, service_key_issue(key=key)


def service_key_issue(*, key: ServiceKey) -> str:
    """Give the unsaved `key` a new random secret, save it, and return the secret (stored
    only hashed: the caller shows it once)."""
    while True:
        secret = SERVICE_KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[:SERVICE_KEY_SHOWN]
        if not ServiceKey.objects.filter(prefix=prefix).exists():  # 1 in 2**48 ever collides
            break
    key.prefix, key.secret_hash = prefix, secret_digest(secret)
    key.save()
    return secret


def service_key_revoke(*, key: ServiceKey) -> bool:
    """Revoke the key from this moment on (its next request is refused); False if it already
    was."""
    revoked = ServiceKey.objects.filter(pk=key.pk, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)


LAST_USED_PRECISION = timedelta(minutes=1)


def service_key_mark_used(*, key: ServiceKey) -> None:
    """Record that the key was used now, at most once a minute: a busy key's requests would
    otherwise all write its row."""
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_PRECISION:
        return
    ServiceKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = now


def events_publish_for_service(
    *,
    key: ServiceKey,
    items: list[PublishItem],
    idempotency_key: str | None = None,
    body_hash: str = "",
) -> Published:
    """Publish `items` in one transaction of their own (all or none; never inside the
    caller's, whose commit would come after the answer), in the order given, exactly as
    publish_event does; return their envelopes.

    With an `idempotency_key`, the publish leaves a receipt; a repeat of the same body within
    PUBLISH_RECEIPT_LIFETIME returns the first publish's envelopes and publishes nothing (a
    concurrent repeat waits for the first at the receipt's unique constraint). Raises
    IdempotencyKeyReused when the key came with another body, EventTypesRefused (publishing
    nothing) when the key may not publish some of the items' types.
    """
    refused = sorted({item.event_type for item in items if not key.may_publish(item.event_type)})
    if refused:
        raise EventTypesRefused(refused)
    try:
        with transaction.atomic(durable=True):
            receipt = None
            if idempotency_key is not None:
                receipt = _receipt_claim(
                    key=key, idempotency_key=idempotency_key, body_hash=body_hash
                )
            events = [
                publish_event(user_id=item.user_id, event_type=item.event_type, data=item.data)
                for item in items
            ]
            if receipt is not None:
                transaction.on_commit(_ReceiptAnswer(receipt, events), robust=True)
    except _AlreadyClaimed:
        return publish_receipt_repeat(key=key, idempotency_key=idempotency_key, body_hash=body_hash)
    return Published([event.envelope() for event in events])


def _receipt_claim(*, key: ServiceKey, idempotency_key: str, body_hash: str) -> PublishReceipt:
    """Insert the receipt first in the publish's transaction: a concurrent request with the
    same key blocks on the unique index until this one ends, then fails here and reads it."""
    lifetime_start = timezone.now() - PUBLISH_RECEIPT_LIFETIME
    PublishReceipt.objects.filter(
        service_key=key, idempotency_key=idempotency_key, created_at__lt=lifetime_start
    ).delete()  # an expired use of the same key, not pruned yet
    try:
        with transaction.atomic():
            return PublishReceipt.objects.create(
                service_key=key,
                idempotency_key=idempotency_key,
                body_hash=body_hash,
                created_at=timezone.now(),
            )
    except IntegrityError:
        raise _AlreadyClaimed from None


def publish_receipt_repeat(
    *, key: ServiceKey, idempotency_key: str, body_hash: str
) -> Published | None:
    """The envelopes the key's publish with `idempotency_key` answered within its lifetime, or
    None when there was none; raises IdempotencyKeyReused when it had another body."""
    receipt = selectors.publish_receipt_get(service_key_id=key.pk, idempotency_key=idempotency_key)
    if receipt is None:
        return None
    if not hmac.compare_digest(receipt.body_hash, body_hash):
        raise IdempotencyKeyReused
    return Published(json.loads(receipt.response)["events"], repeated=True)


class _ReceiptAnswer:
    """An on_commit hook whose before-commit step writes the publish's envelopes into its
    receipt, in the same transaction. Registered after the events' own hooks, it runs after
    they are numbered and stored (compat.run_before_commit calls hooks in that order)."""

    __slots__ = ("events", "receipt")

    def __init__(self, receipt: PublishReceipt, events: list[Event]) -> None:
        self.receipt, self.events = receipt, events

    @staticmethod
    def before_commit(connection, answers: list["_ReceiptAnswer"]) -> None:
        for answer in answers:
            envelopes = [event.envelope() for event in answer.events]
            PublishReceipt.objects.filter(pk=answer.receipt.pk).update(
                response=dump_json({"events": envelopes})
            )

    def __call__(self) -> None:
        pass  # everything happened before the commit


def publish_receipt_prune() -> int:
    """Delete the receipts past PUBLISH_RECEIPT_LIFETIME; return how many."""
    cutoff = timezone.now() - PUBLISH_RECEIPT_LIFETIME
    deleted, _ = PublishReceipt.objects.filter(created_at__lt=cutoff).delete()
    return deleted


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
        digest=secret_digest(ticket),
        user_id=user_id,
        claims=claims,
        token_expires_at=token_expires_at,
        expires_at=expires_at,
    )
    return ticket, expires_at


def stream_ticket_redeem(*, ticket: str) -> StreamTicket | None:
    """Use up a ticket: its row when it was issued, unused and unexpired, else None. Of two
    requests with one ticket, on any server process, at most one gets the row."""
    digest = secret_digest(ticket)
    found = StreamTicket.objects.filter(digest=digest, expires_at__gt=timezone.now()).first()
    if found is None:
        return None
    deleted, _ = StreamTicket.objects.filter(digest=digest).delete()
    return found if deleted else None
