"""The event store: every published event, numbered per user, kept for replay."""

import json

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
