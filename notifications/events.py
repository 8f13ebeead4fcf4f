"""The event catalogue: every event type and the exact shape of its `data`.

Publishing goes through `build_payload`, so a producer that sends a missing, extra or mistyped
key fails at its own call site, and every value is already JSON-safe (UUIDs and datetimes as
strings) before it reaches the event store or the channel layer.
"""

import enum
import math
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

CLASSIFICATIONS = ("inquiry", "meeting_request", "complaint", "follow_up", "spam", "other")
BATCH_FINAL_STATUSES = ("completed", "failed", "cancelled")


class EventType(enum.StrEnum):
    EMAIL_RECEIVED = "email_received"
    EMAIL_CLASSIFIED = "email_classified"
    DRAFT_READY = "draft_ready"
    DRAFT_APPROVED = "draft_approved"
    DRAFT_REJECTED = "draft_rejected"
    EMAIL_SENT = "email_sent"
    BATCH_PROGRESS = "batch_progress"
    BATCH_COMPLETE = "batch_complete"


class EventPayloadError(ValueError):
    """A producer built an event whose data does not match the catalogue."""


Normaliser = Callable[[Any], Any]


# A UUID string already in the form str(UUID) gives: most producers pass one on.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return value if _CANONICAL_UUID.fullmatch(value) else str(uuid.UUID(value))
    raise TypeError("expected a UUID or a UUID string")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("expected a non-negative integer")
    return value


def _percentage(value: Any) -> int:
    if _count(value) > 100:
        raise ValueError("expected an integer from 0 to 100")
    return value


def _confidence(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError("expected a number from 0 to 1")
    return value


def _one_of(*choices: str) -> Normaliser:
    def normalise(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return normalise


EVENT_SCHEMAS: dict[EventType, dict[str, Normaliser]] = {
    EventType.EMAIL_RECEIVED: {"email_id": _uuid, "subject": _text, "sender": _text},
    EventType.EMAIL_CLASSIFIED: {
        "email_id": _uuid,
        "classification": _one_of(*CLASSIFICATIONS),
        "confidence": _confidence,
    },
    EventType.DRAFT_READY: {"draft_id": _uuid, "email_id": _uuid, "requires_approval": _boolean},
    EventType.DRAFT_APPROVED: {"draft_id": _uuid, "email_id": _uuid},
    EventType.DRAFT_REJECTED: {"draft_id": _uuid, "email_id": _uuid, "reason": _optional_text},
    EventType.EMAIL_SENT: {"email_id": _uuid, "draft_id": _uuid},
    EventType.BATCH_PROGRESS: {
        "job_id": _uuid,
        "processed": _count,
        "total": _count,
        "percentage": _percentage,
    },
    EventType.BATCH_COMPLETE: {
        "job_id": _uuid,
        "status": _one_of(*BATCH_FINAL_STATUSES),
        "succeeded": _count,
        "failed": _count,
    },
}


_EVENT_TYPES = {event_type.value: event_type for event_type in EventType}


def parse_event_type(value: Any) -> EventType:
    """Return the EventType named by `value`, or raise EventPayloadError."""
    try:
        return _EVENT_TYPES[value]
    except (KeyError, TypeError):
        raise EventPayloadError(
            f"unknown event type {value!r}; expected one of {', '.join(EventType)}"
        ) from None


def build_payload(event_type: EventType | str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `data` against the catalogue and return a JSON-safe copy of it."""
    event_type = parse_event_type(event_type)
    schema = EVENT_SCHEMAS[event_type]
    if not isinstance(data, Mapping):
        raise EventPayloadError(f"{event_type}: data must be a mapping, not {type(data).__name__}")
    if data.keys() != schema.keys():
        missing = sorted(set(schema) - set(data))
        extra = sorted(set(data) - set(schema))
        raise EventPayloadError(f"{event_type}: missing keys {missing}, unexpected keys {extra}")
    payload = {}
    for key, normalise in schema.items():
        try:
            payload[key] = normalise(data[key])
        except (TypeError, ValueError) as exc:
            raise EventPayloadError(f"{event_type}.{key}: {exc} (got {data[key]!r})") from None
    return payload


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with an explicit +00:00 and microseconds, as the wire format says."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def sample_data(event_type: EventType | str) -> dict[str, Any]:
    """A valid payload for `event_type`, for test events fired by operators."""
    event_type = parse_event_type(event_type)
    job_id, email_id, draft_id = (str(uuid.uuid4()) for _ in range(3))
    samples: dict[EventType, dict[str, Any]] = {
        EventType.EMAIL_RECEIVED: {
            "email_id": email_id,
            "subject": "Test notification: meeting tomorrow",
            "sender": "ReasonFlow Test <test@reasonflow.invalid>",
        },
        EventType.EMAIL_CLASSIFIED: {
            "email_id": email_id,
            "classification": "meeting_request",
            "confidence": 0.95,
        },
        EventType.DRAFT_READY: {
            "draft_id": draft_id,
            "email_id": email_id,
            "requires_approval": True,
        },
        EventType.DRAFT_APPROVED: {"draft_id": draft_id, "email_id": email_id},
        EventType.DRAFT_REJECTED: {"draft_id": draft_id, "email_id": email_id, "reason": None},
        EventType.EMAIL_SENT: {"email_id": email_id, "draft_id": draft_id},
        EventType.BATCH_PROGRESS: {
            "job_id": job_id,
            "processed": 10,
            "total": 50,
            "percentage": 20,
        },
        EventType.BATCH_COMPLETE: {
            "job_id": job_id,
            "status": "completed",
            "succeeded": 50,
            "failed": 0,
        },
    }
    return samples[event_type]
