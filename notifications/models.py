"""The event store (every published event, numbered per user, kept for replay), and the service
keys other services publish with, with the receipts of their idempotent publishes."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import models

from notifications.events import EventType, format_timestamp


class EventCounter(models.Model):
    """The last event id handed out to a user; its row lock orders their events."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    last_event_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.last_event_id}"


class Event(models.Model):
    """One published event. `event_id` is the envelope's `id`: 1, 2, 3, … per user."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # the (user, event_id) unique index serves every lookup by user
    )
    event_id = models.BigIntegerField()
    type = models.CharField(max_length=32, choices=[(t.value, t.value) for t in EventType])
    data = models.JSONField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "event_id"], name="event_user_event_id_unique")
        ]
        ordering = ["user", "event_id"]

    def __str__(self) -> str:
        return f"#{self.event_id} {self.type} for {self.user_id}"

    def envelope(self) -> dict:
        """The wire form of this event (PROTOCOL §2)."""
        return {
            "id": self.event_id,
            "type": self.type,
            "user_id": str(self.user_id),
            "data": self.data,
            "timestamp": format_timestamp(self.created_at),
        }

    def envelope_json(self) -> str:
        return envelope_json(
            event_id=self.event_id,
            event_type=self.type,
            user_id=self.user_id,
            data_json=dump_json(self.data),
            created_at=self.created_at,
        )


def dump_json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def envelope_json(*, event_id: int, event_type: str, user_id, data_json: str, created_at) -> str:
    """The envelope's wire text, built around `data` already encoded (publishing encodes it
    once for the store and reuses it here)."""
    return (
        f'{{"id":{int(event_id)},"type":{dump_json(event_type)},"user_id":"{user_id}",'
        f'"data":{data_json},"timestamp":"{format_timestamp(created_at)}"}}'
    )


class Presence(models.Model):
    """How many sockets one server process holds for one user, until `expires_at`.

    The database fallback of presence (notifications/realtime/presence.py) when there is no
    Redis: each process rewrites its own rows and renews them on a heartbeat; a crashed
    process's rows expire and are ignored, then deleted by the next writer.
    """

    process_id = models.CharField(max_length=80)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    connections = models.PositiveIntegerField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["process_id", "user"], name="presence_process_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.connections} on {self.process_id}"


SERVICE_KEY_PREFIX = "rfk_"
SERVICE_KEY_SHOWN = 12  # characters kept in clear: the prefix and 8 random ones
SERVICE_KEY_MAX_LENGTH = 64  # generated keys have 47; longer strings are refused unhashed
PUBLISH_RECEIPT_LIFETIME = timedelta(hours=24)  # how long a repeat gets the first answer


def secret_digest(secret: str) -> str:
    """The stored form of a service key or a stream ticket. One SHA-256 suffices: both are 256
    random bits, not passwords, so there is nothing to guess and nothing a slow hash would
    protect."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ServiceKey(models.Model):
    """A key another service publishes with (PROTOCOL §6): not a user, not a JWT.

    Only a hash of the secret is stored; `prefix`, its first characters, names the key in lists
    and finds it on each request. `event_types` empty means every type of the catalogue.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    event_types = models.JSONField(
        default=list, blank=True, help_text="The event types it may publish; empty for all."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def may_publish(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class PublishReceipt(models.Model):
    """The answer to a publish sent with an Idempotency-Key, kept so that a repeat of it
    (a retry after a timeout) gets the same answer and publishes nothing.

    Written in the publish's own transaction, so the unique constraint makes concurrent
    repeats wait for the first and then find its receipt.
    """

    service_key = models.ForeignKey(ServiceKey, on_delete=models.CASCADE, related_name="+")
    idempotency_key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    # The answer's JSON text as it was sent (jsonb would reorder the envelopes' keys).
    response = models.TextField(blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service_key", "idempotency_key"], name="publish_receipt_key_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key} of {self.service_key_id}"


class StreamTicket(models.Model):
    """A single-use ticket that opens one event stream over server-sent events (PROTOCOL §5):
    what an EventSource puts in its URL instead of an access token.

    Only the ticket's SHA-256 is stored. It carries what the stream needs of the access token
    that asked for it: the user, the token's policy claims (so a revocation closes the stream
    as it would the token's socket) and the token's expiry (the stream ends 4002 there).
    """

    digest = models.CharField(max_length=64, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claims = models.JSONField()
    token_expires_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"stream ticket of {self.user_id} until {self.expires_at}"
