"""Admin: the "Send test notification…" action on users, the event store, service keys, and the
email pages, through Django's test client as staff and non-staff users."""

import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from emails.models import BatchJob
from notifications import services
from notifications.events import sample_data
from notifications.models import Event, ServiceKey
from notifications.realtime.presence import _write_database
from tests.emails.factories import DraftFactory, EmailFactory

# Presence is kept in the database when the channel layer is not Redis; these tests write
# other processes' presence rows there, whatever REDIS_URL the environment has.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("memory_layer")]

USERS = reverse("admin:users_user_changelist")
ACTION = "send_test_notification"


def apply_action(client, users, *, event_type="email_sent", data="", **options):
    """Submit the action's form for `users`, as its Send button does."""
    return client.post(
        USERS,
        {
            "action": ACTION,
            "_selected_action": [str(user.pk) for user in users],
            "apply": "1",
            "event_type": event_type,
            "data": data,
        },
        **options,
    )


@pytest.fixture
def operator(make_user, client):
    """A staff member who may view users (what the user admin needs), logged in."""
    user = make_user(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_user"))
    client.force_login(user)
    return user


def test_the_action_shows_a_form_prefilled_with_a_valid_sample(client, operator, user):
    response = client.post(USERS, {"action": ACTION, "_selected_action": [str(user.pk)]})
    assert response.status_code == 200
    assert response.templates[0].name == "admin/notifications/send_test_notification.html"
    form = response.context["form"]
    assert form.initial["event_type"] == "email_received"
    sample = json.loads(form.initial["data"])
    assert set(sample) == {"email_id", "subject", "sender"}
    samples = response.context["samples"]
    assert set(samples) == {
        "email_received", "email_classified", "draft_ready", "draft_approved",
        "draft_rejected", "email_sent", "batch_progress", "batch_complete",
    }  # fmt: skip
    assert user.email in response.content.decode()
    assert not Event.objects.exists()


def test_applying_the_form_publishes_and_reports_online_connections(client, operator, user):
    # Another server process holds two sockets of this user (its presence rows, as it writes them).
    _write_database("other-process", {str(user.pk): 2}, 30)
    data = {
        "draft_id": "9b2f6a56-8a3e-4b6f-9d55-2f7f8f2f6a11",
        "email_id": "1d1c3f51-0b7d-4f63-a1b0-5d3f0b1e7c22",
        "requires_approval": False,
    }
    response = apply_action(
        client, [user], event_type="draft_ready", data=json.dumps(data), follow=True
    )
    assert response.status_code == 200
    event = Event.objects.get(user=user)
    assert (event.event_id, event.type, event.data) == (1, "draft_ready", data)
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [f"Sent draft_ready event #1 to {user.email}; connections online: 2."]


def test_empty_data_sends_a_fresh_sample_to_every_selected_user(client, operator, user, other_user):
    response = apply_action(client, [user, other_user], event_type="batch_complete", follow=True)
    assert response.status_code == 200
    events = Event.objects.order_by("user__email")
    assert {e.user_id for e in events} == {user.pk, other_user.pk}
    assert all(e.type == "batch_complete" and e.data["status"] == "completed" for e in events)
    assert len(list(response.context["messages"])) == 2


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("{not json", "Not valid JSON"),
        ('{"email_id": "x"}', "missing keys"),
        ("[1, 2]", "data must be a mapping"),
    ],
)
def test_bad_data_shows_the_form_again_and_publishes_nothing(client, operator, user, data, error):
    response = apply_action(client, [user], event_type="email_received", data=data)
    assert response.status_code == 200
    assert error in " ".join(response.context["form"].errors["data"])
    assert not Event.objects.exists()


def test_a_non_staff_user_is_sent_to_the_login_page(client, user, other_user):
    client.force_login(user)
    response = apply_action(client, [other_user])
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not Event.objects.exists()


def test_staff_without_permission_on_users_gets_403(client, staff_user, other_user):
    client.force_login(staff_user)
    response = apply_action(client, [other_user])
    assert response.status_code == 403
    assert not Event.objects.exists()


def test_the_user_list_and_page_show_online_connections(client, operator, user):
    _write_database("process-a", {str(user.pk): 1}, 30)
    _write_database("process-b", {str(user.pk): 2}, 30)
    _write_database("crashed", {str(user.pk): 5}, -1)  # expired: its process is gone
    response = client.get(USERS, {"q": user.email})
    assert response.status_code == 200
    assert '<td class="field-online_connections">3</td>' in response.content.decode()
    page = client.get(reverse("admin:users_user_change", args=[user.pk]))
    assert "Online connections" in page.content.decode()
    assert f"?user__id__exact={user.pk}" in page.content.decode()


def _online_column(body: str) -> dict[str, str]:
    """The user list's online-connections cell per user email, read from the page's rows."""
    cells = {}
    for row in body.split("<tr")[1:]:
        email = re.search(r'class="field-email"><a [^>]*>([^<]+)</a>', row)
        online = re.search(r'<td class="field-online_connections">([^<]*)</td>', row)
        if email and online:
            cells[email.group(1)] = online.group(1)
    return cells


def test_the_user_list_reads_presence_once_whatever_the_number_of_rows(client, operator, make_user):
    def list_page() -> tuple[dict[str, str], int]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(USERS)
        assert response.status_code == 200
        reads = sum('"notifications_presence"' in q["sql"] for q in captured.captured_queries)
        return _online_column(response.content.decode()), reads

    first = make_user()
    _write_database("process-a", {str(first.pk): 1}, 30)
    column, reads = list_page()
    assert (column[first.email], column[operator.email], reads) == ("1", "0", 1)

    more = [make_user() for _ in range(6)]
    _write_database("process-b", {str(user.pk): n for n, user in enumerate(more, start=2)}, 30)
    column, reads = list_page()
    assert reads == 1
    expected = {operator.email: "0", first.email: "1"}
    expected |= {user.email: str(n) for n, user in enumerate(more, start=2)}
    assert column == expected


def test_the_user_list_shows_unknown_presence_when_redis_does_not_answer(
    client, operator, settings
):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifications.realtime.layers.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0"}]},  # nothing listens
        }
    }
    response = client.get(USERS)
    assert response.status_code == 200
    assert _online_column(response.content.decode()) == {operator.email: "?"}


@pytest.fixture
def event_reader(make_user, client):
    user = make_user(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_event"))
    client.force_login(user)
    return user


def test_the_event_admin_filters_by_user_and_type_and_searches_by_id(
    client, event_reader, user, other_user
):
    for event_type in ("email_received", "draft_ready", "email_received"):
        services.event_send_sample(user_id=user.pk, event_type=event_type)
    services.event_send_sample(user_id=other_user.pk, event_type="draft_ready")
    url = reverse("admin:notifications_event_changelist")

    def listed(**params) -> list[tuple]:
        response = client.get(url, params)
        assert response.status_code == 200
        return sorted((e.user_id, e.event_id) for e in response.context["cl"].result_list)

    assert listed(user__id__exact=str(user.pk)) == [(user.pk, 1), (user.pk, 2), (user.pk, 3)]
    assert listed(type__exact="draft_ready") == sorted([(user.pk, 2), (other_user.pk, 1)])
    assert listed(q="3") == [(user.pk, 3)]
    assert listed(q=str(other_user.pk)) == [(other_user.pk, 1)]
    assert listed(q=other_user.email) == [(other_user.pk, 1)]
    assert listed(q="no-such-thing") == []
    response = client.get(url)
    assert other_user.email in response.content.decode()  # the user filter lists its users


def test_stored_events_are_read_only(client, event_reader, user):
    event = services.event_send_sample(user_id=user.pk, event_type="email_sent")
    change = reverse("admin:notifications_event_change", args=[event.pk])
    assert client.get(change).status_code == 200
    assert client.post(change, {"type": "draft_ready"}).status_code == 403
    assert client.get(reverse("admin:notifications_event_add")).status_code == 403
    event.refresh_from_db()
    assert event.type == "email_sent"


def test_email_draft_and_batch_pages_show_their_statuses(client, make_user, user):
    client.force_login(make_user(is_staff=True, is_superuser=True))
    email = EmailFactory(owner=user)
    draft = DraftFactory(email=email)
    job = BatchJob.objects.create(owner=user, kind="classify", status="running", total=3)
    pages = [
        ("admin:emails_email_changelist", email.get_status_display()),
        ("admin:emails_draft_changelist", draft.get_status_display()),
        ("admin:emails_batchjob_changelist", job.get_status_display()),
    ]
    for name, status in pages:
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        body = response.content.decode()
        assert '<td class="field-status">' + status + "</td>" in body, name
        assert "status__exact" in body  # the status filter


# --- service keys ------------------------------------------------------------------------------


@pytest.fixture
def key_admin(make_user, client):
    client.force_login(make_user(is_staff=True, is_superuser=True))


@pytest.mark.usefixtures("key_admin")
def test_adding_a_service_key_shows_its_secret_once_and_it_publishes(client, user):
    response = client.post(
        reverse("admin:notifications_servicekey_add"),
        {"name": "mail webhooks", "event_types": ["email_sent", "email_received"]},
    )

    assert response.status_code == 200
    assert response.templates[0].name == "admin/notifications/service_key_created.html"
    assert "no-store" in response["Cache-Control"]
    secret = re.search(
        r'<code id="service-key"[^>]*>(rfk_[^<]+)</code>', response.content.decode()
    )[1]
    key = ServiceKey.objects.get()
    assert (key.name, key.event_types) == ("mail webhooks", ["email_received", "email_sent"])
    assert key.prefix == secret[:12] and secret not in key.secret_hash
    for page in (
        reverse("admin:notifications_servicekey_changelist"),
        reverse("admin:notifications_servicekey_change", args=[key.pk]),
    ):
        content = client.get(page).content.decode()
        assert key.prefix in content and secret not in content
    publish = APIClient().post(
        "/api/v1/notifications/publish",
        {"user": user.email, "type": "email_sent", "data": sample_data("email_sent")},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert publish.status_code == 201


@pytest.mark.usefixtures("key_admin")
def test_the_revoke_action_refuses_the_keys_next_request(client, user):
    kept, kept_secret = services.service_key_create(name="kept")
    revoked, revoked_secret = services.service_key_create(name="revoked")

    response = client.post(
        reverse("admin:notifications_servicekey_changelist"),
        {"action": "revoke_service_keys", "_selected_action": [str(revoked.pk)]},
        follow=True,
    )

    assert "Revoked 1 service key(s)." in response.content.decode()
    revoked.refresh_from_db()
    kept.refresh_from_db()
    assert revoked.revoked_at is not None and kept.revoked_at is None
    body = {"user": user.email, "type": "email_sent", "data": sample_data("email_sent")}
    for secret, status in [(revoked_secret, 401), (kept_secret, 201)]:
        client_for_key = APIClient()
        client_for_key.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert (
            client_for_key.post("/api/v1/notifications/publish", body, format="json").status_code
            == status
        )
