"""Reads of the event store for producers and REST, always scoped to the users asked for, and
of the service keys and publish receipts of the publish API."""

import hmac
import uuid

from django.db import connection
from django.utils import timezone

from notifications.models import (
    PUBLISH_RECEIPT_LIFETIME,
    SERVICE_KEY_MAX_LENGTH,
    SERVICE_KEY_PREFIX,
    SERVICE_KEY_SHOWN,
    Event,
    EventCounter,
    PublishReceipt,
    ServiceKey,
    secret_digest,
)


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


def service_key_get_by_secret(*, secret: str) -> ServiceKey | None:
    """The key whose secret is `secret`, revoked or not; None when no key has it.

    Found by its clear prefix, then the hashes compared in constant time."""
    if not secret.startswith(SERVICE_KEY_PREFIX) or len(secret) > SERVICE_KEY_MAX_LENGTH:
        return None
    key = ServiceKey.objects.filter(prefix=secret[:SERVICE_KEY_SHOWN]).first()
    if key is None or not hmac.compare_digest(key.secret_hash, secret_digest(secret)):
        return None
    return key


def publish_receipt_get(*, service_key_id: int, idempotency_key: str) -> PublishReceipt | None:
    """The unexpired receipt of the key's publish sent with `idempotency_key`, or None."""
    return PublishReceipt.objects.filter(
        service_key_id=service_key_id,
        idempotency_key=idempotency_key,
        created_at__gte=timezone.now() - PUBLISH_RECEIPT_LIFETIME,
    ).first()
