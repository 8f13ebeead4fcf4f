"""REST endpoints of the event stream: history, stream tickets and the staff test trigger."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from notifications.events import EventType, sample_data
from notifications.models import Event, StreamTicket
from notifications.publish import publish_event

pytestmark = pytest.mark.django_db


def publish_many(user, count):
    return [
        publish_event(user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready"))
        for _ in range(count)
    ]


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- history ---------------------------------------------------------------------------------


def test_history_returns_the_callers_events_after_an_id(auth_client, user, other_user):
    publish_many(user, 5)
    publish_many(other_user, 3)
    response = auth_client.get("/api/v1/notifications/events?after=2&limit=2")
    assert response.status_code == 200
    body = response.json()
    assert [e["id"] for e in body["events"]] == [3, 4]
    assert all(e["user_id"] == str(user.id) for e in body["events"])
    assert body["has_more"] is True
    assert body["last_event_id"] == 5
    assert body["events"][0] == Event.objects.get(user=user, event_id=3).envelope()


def test_history_defaults_to_everything_kept(auth_client, user):
    publish_many(user, 3)
    body = auth_client.get("/api/v1/notifications/events").json()
    assert [e["id"] for e in body["events"]] == [1, 2, 3]
    assert body["has_more"] is False


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("after=%00", "after"),
        (f"after={2**63}", "after"),  # past bigint, the type of event ids
        (f"after={10**30}", "after"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=%00", "limit"),
    ],
)
def test_history_rejects_bad_parameters_naming_the_field(auth_client, query, field):
    response = auth_client.get(f"/api/v1/notifications/events?{query}")
    assert response.status_code == 400
    assert field in response.json()


def test_history_needs_authentication(api_client):
    assert api_client.get("/api/v1/notifications/events").status_code == 401


# --- test trigger ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EventType))
def test_staff_can_send_every_event_type_by_email_or_id(staff_user, user, event_type):
    client = client_for(staff_user)
    for identifier in (user.email.upper(), str(user.id)):
        response = client.post(
            "/api/v1/notifications/test", {"user": identifier, "type": event_type}, format="json"
        )
        assert response.status_code == 201, response.content
        envelope = response.json()["event"]
        assert envelope["type"] == event_type
        assert envelope["user_id"] == str(user.id)
        assert set(envelope["data"]) == set(sample_data(event_type))
    assert Event.objects.filter(user=user).count() == 2


def test_staff_can_send_their_own_data(staff_user, user):
    data = {
        "draft_id": "7c7c1a55-2f6a-4c58-9f4b-1a2b3c4d5e6f",
        "email_id": "8d8d1a55-2f6a-4c58-9f4b-1a2b3c4d5e6f",
    }
    response = client_for(staff_user).post(
        "/api/v1/notifications/test",
        {"user": str(user.id), "type": "draft_approved", "data": data},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["event"]["data"] == data


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "draft_ready"}, "user"),
        ({"user": "nobody@example.com", "type": "draft_ready"}, "user"),
        ({"user": "00000000-0000-4000-8000-000000000000", "type": "draft_ready"}, "user"),
        ({"user": "USER", "type": "email_deleted"}, "type"),
        ({"user": "USER"}, "type"),
        ({"user": "USER", "type": "draft_ready", "data": {"draft_id": "x"}}, "data"),
        ({"user": "USER", "type": "draft_ready", "data": [1, 2]}, "data"),
    ],
)
def test_test_trigger_rejects_bad_input_naming_the_field(staff_user, user, payload, field):
    payload = {k: (str(user.id) if v == "USER" else v) for k, v in payload.items()}
    response = client_for(staff_user).post("/api/v1/notifications/test", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Event.objects.exists()


EMAIL_ID = '"email_id": "8d8d1a55-2f6a-4c58-9f4b-1a2b3c4d5e6f"'


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            f'{{{EMAIL_ID}, "subject": "a\\u0000b", "sender": "x"}}',
            {"subject": ["NUL characters are not allowed."]},
        ),
        (
            f'{{{EMAIL_ID}, "subject": "\\ud800", "sender": "x"}}',
            {"subject": ["Unpaired surrogate characters are not allowed."]},
        ),
        (
            f'{{{EMAIL_ID}, "subject": "x", "sender": "x", "x\\u0000": 1}}',
            ["Keys may not contain NUL characters."],
        ),
        (
            f'{{{EMAIL_ID}, "subject": "x", "sender": ["\\udfff"]}}',
            {"sender": {"0": ["Unpaired surrogate characters are not allowed."]}},
        ),
    ],
)
def test_test_trigger_refuses_nul_and_lone_surrogates_in_data_naming_the_field(
    staff_user, user, data, error
):
    # Before: PostgreSQL refused the NUL in jsonb (500) while SQLite stored it (201), and
    # neither could encode a lone surrogate (500). Both databases now answer 400, storing nothing.
    body = f'{{"user": "{user.id}", "type": "email_received", "data": {data}}}'

    response = client_for(staff_user).generic(
        "POST", "/api/v1/notifications/test", body, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert response.json() == {"data": error}
    assert not Event.objects.exists()


def test_test_trigger_is_forbidden_to_non_staff(auth_client, user):
    response = auth_client.post(
        "/api/v1/notifications/test", {"user": str(user.id), "type": "draft_ready"}, format="json"
    )
    assert response.status_code == 403
    assert not Event.objects.exists()


def test_test_trigger_needs_authentication(api_client, user):
    response = api_client.post(
        "/api/v1/notifications/test", {"user": str(user.id), "type": "draft_ready"}, format="json"
    )
    assert response.status_code == 401


# --- stream tickets (PROTOCOL §5) -------------------------------------------------------------


def test_a_stream_ticket_is_issued_for_the_caller_and_stored_hashed(api_client, user, settings):
    token = AccessToken.for_user(user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.post("/api/v1/notifications/stream/ticket")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ticket", "expires_at"} and len(body["ticket"]) >= 32
    expires_at = parse_datetime(body["expires_at"])
    ttl = timedelta(seconds=settings.NOTIFICATIONS_SSE_TICKET_TTL)
    assert timezone.now() < expires_at <= timezone.now() + ttl <= timezone.now() + timedelta(60)
    (stored,) = StreamTicket.objects.all()
    assert stored.user_id == user.id and body["ticket"] not in stored.digest
    assert stored.token_expires_at.timestamp() == token["exp"]


def test_a_stream_ticket_needs_a_bearer_token(api_client):
    response = api_client.post("/api/v1/notifications/stream/ticket")
    assert response.status_code == 401
    assert "detail" in response.json()
