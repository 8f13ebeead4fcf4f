"""The REST surface of emails, drafts and batch jobs (PROTOCOL §4) through APIClient."""

import uuid

import pytest
from django.core import mail
from django.db import connection

from emails.models import BatchJob, Draft, DraftStatus, Email, EmailStatus
from tests.emails.factories import DraftFactory, EmailFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_email(other_user):
    return EmailFactory(owner=other_user)


def test_every_endpoint_needs_a_token(api_client):
    some = uuid.uuid4()
    for method, path in [
        ("get", "/api/v1/emails/"),
        ("get", f"/api/v1/emails/{some}"),
        ("post", "/api/v1/emails/sync"),
        ("post", f"/api/v1/emails/{some}/process"),
        ("get", "/api/v1/drafts/"),
        ("post", f"/api/v1/drafts/{some}/approve"),
        ("post", "/api/v1/emails/batch/process"),
        ("get", f"/api/v1/emails/batch/{some}"),
    ]:
        assert getattr(api_client, method)(path).status_code == 401, path


def test_sync_returns_the_new_emails(auth_client, user, events):
    response = auth_client.post("/api/v1/emails/sync")

    assert response.status_code == 200
    body = response.json()
    assert body["received"] == 3
    assert [e["id"] for e in body["emails"]] == [
        str(e.id) for e in Email.objects.filter(owner=user).order_by("received_at")
    ]
    assert body["emails"][0]["subject"] == "Question about enterprise pricing"
    assert len(events(user)) == 3


def test_sync_from_a_broken_source_is_502_with_a_message(auth_client, user, settings, events):
    settings.EMAILS_SOURCE = "imaps://someone:secret@127.0.0.1:1/INBOX"

    response = auth_client.post("/api/v1/emails/sync")

    assert response.status_code == 502
    assert response.json()["detail"].startswith(
        "The mail source could not be read: IMAP 127.0.0.1:1"
    )
    assert "secret" not in response.json()["detail"]
    assert events(user) == []


def test_list_is_paginated_and_filtered(auth_client, user, other_email):
    EmailFactory.create_batch(3, owner=user)
    EmailFactory(
        owner=user,
        status=EmailStatus.SENT,
        is_read=True,
        classification="complaint",
        confidence=0.9,
    )

    page = auth_client.get("/api/v1/emails/?page_size=2").json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    assert str(other_email.id) not in {e["id"] for e in page["results"]}

    def ids(query):
        return [e["status"] for e in auth_client.get(f"/api/v1/emails/?{query}").json()["results"]]

    assert ids("status=sent") == ["sent"]
    assert ids("classification=complaint") == ["sent"]
    assert ids("unread=true") == ["pending"] * 3
    assert ids("unread=false") == ["sent"]


def test_a_bad_filter_is_400_naming_the_field(auth_client):
    response = auth_client.get("/api/v1/emails/?status=lost")
    assert response.status_code == 400
    assert "status" in response.json()


def test_detail_and_mark_read(auth_client, user):
    email = EmailFactory(owner=user)

    body = auth_client.get(f"/api/v1/emails/{email.id}").json()
    assert body["id"] == str(email.id) and body["draft"] is None and body["is_read"] is False

    response = auth_client.patch(f"/api/v1/emails/{email.id}", {"is_read": True}, format="json")
    assert response.status_code == 200 and response.json()["is_read"] is True
    assert auth_client.patch(f"/api/v1/emails/{email.id}", {}, format="json").status_code == 400


def test_another_users_objects_are_404(auth_client, other_user, other_email, events):
    draft = DraftFactory(email=other_email)
    job = BatchJob.objects.create(owner=other_user, kind="sync")
    before = events(other_user)

    for method, path in [
        ("get", f"/api/v1/emails/{other_email.id}"),
        ("patch", f"/api/v1/emails/{other_email.id}"),
        ("post", f"/api/v1/emails/{other_email.id}/process"),
        ("get", f"/api/v1/drafts/{draft.id}"),
        ("patch", f"/api/v1/drafts/{draft.id}"),
        ("post", f"/api/v1/drafts/{draft.id}/approve"),
        ("post", f"/api/v1/drafts/{draft.id}/reject"),
        ("get", f"/api/v1/emails/batch/{job.id}"),
        ("post", f"/api/v1/emails/batch/{job.id}/cancel"),
    ]:
        # A valid body: a draft's owner is checked after its input is.
        response = getattr(auth_client, method)(path, {"subject": "Mine now"}, format="json")
        assert response.status_code == 404, path
        assert str(other_email.subject) not in response.content.decode()
    assert events(other_user) == before
    unchanged = Draft.objects.get(pk=draft.pk)
    assert (unchanged.status, unchanged.subject) == (DraftStatus.PENDING, draft.subject)


def test_process_then_approve(auth_client, user, events):
    email = EmailFactory(owner=user)

    response = auth_client.post(f"/api/v1/emails/{email.id}/process")
    assert response.status_code == 200
    body = response.json()
    assert body["classification"] == "inquiry" and body["status"] == "drafted"
    draft_id = body["draft"]["id"]
    assert body["draft"]["status"] == "pending"

    response = auth_client.post(f"/api/v1/drafts/{draft_id}/approve")
    assert response.status_code == 200
    assert response.json()["status"] == "sent"
    assert len(mail.outbox) == 1
    assert [t for t, _ in events(user)] == [
        "email_received",
        "email_classified",
        "draft_ready",
        "draft_approved",
        "email_sent",
    ]


def test_conflicts_are_409_and_publish_nothing(auth_client, user, events):
    sent = EmailFactory(owner=user, status=EmailStatus.SENT)
    rejected = DraftFactory(email=EmailFactory(owner=user), status=DraftStatus.REJECTED)
    before = events(user)

    response = auth_client.post(f"/api/v1/emails/{sent.id}/process")
    assert response.status_code == 409
    assert response.json() == {"detail": "Email is sent; only pending or rejected emails."}
    assert auth_client.post(f"/api/v1/drafts/{rejected.id}/approve").status_code == 409
    assert auth_client.post(f"/api/v1/drafts/{rejected.id}/reject").status_code == 409
    assert auth_client.post(f"/api/v1/drafts/{rejected.id}/send").status_code == 409
    response = auth_client.patch(f"/api/v1/drafts/{rejected.id}", {"body": "x"}, format="json")
    assert response.status_code == 409
    assert events(user) == before


def test_reject_with_and_without_a_reason(auth_client, user, events):
    first = DraftFactory(email=EmailFactory(owner=user))
    second = DraftFactory(email=EmailFactory(owner=user))

    response = auth_client.post(
        f"/api/v1/drafts/{first.id}/reject", {"reason": "Too long"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["rejection_reason"] == "Too long"
    assert auth_client.post(f"/api/v1/drafts/{second.id}/reject").status_code == 200
    assert [d["reason"] for t, d in events(user) if t == "draft_rejected"] == ["Too long", None]


def test_draft_list_edit_and_bad_input(auth_client, user, other_email):
    draft = DraftFactory(email=EmailFactory(owner=user))
    DraftFactory(email=other_email)

    listing = auth_client.get("/api/v1/drafts/").json()
    assert [d["id"] for d in listing["results"]] == [str(draft.id)]
    assert auth_client.get("/api/v1/drafts/?status=sent").json()["count"] == 0

    response = auth_client.patch(f"/api/v1/drafts/{draft.id}", {"body": "New text"}, format="json")
    assert response.status_code == 200 and response.json()["body"] == "New text"
    response = auth_client.patch(f"/api/v1/drafts/{draft.id}", {"body": ""}, format="json")
    assert response.status_code == 400 and "body" in response.json()
    response = auth_client.post(
        f"/api/v1/drafts/{draft.id}/reject", {"reason": ["x"]}, format="json"
    )
    assert response.status_code == 400 and "reason" in response.json()


def test_batch_start_is_202_queued_and_the_job_can_be_read(
    auth_client, user, events, django_capture_on_commit_callbacks
):
    ids = [str(EmailFactory(owner=user).id) for _ in range(2)]

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            "/api/v1/emails/batch/process", {"email_ids": ids}, format="json"
        )

    assert response.status_code == 202
    body = response.json()
    assert body == {"job_id": body["job_id"], "status": "queued", "total": 2, "processed": 0}
    job = auth_client.get(f"/api/v1/emails/batch/{body['job_id']}").json()
    assert job["status"] == "completed"
    assert (job["processed"], job["percentage"], job["succeeded"], job["failed"]) == (2, 100, 2, 0)
    assert events(user)[-1][0] == "batch_complete"
    assert auth_client.get("/api/v1/emails/batch/").json()["count"] == 1


def test_batch_sync_needs_no_body(auth_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post("/api/v1/emails/batch/sync")
    assert response.status_code == 202
    assert response.json()["total"] == 0 and response.json()["status"] == "queued"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"email_ids": []},
        {"email_ids": ["not-a-uuid"]},
        {"email_ids": "x"},
        {"email_ids": [str(uuid.uuid4()) for _ in range(101)]},
    ],
)
def test_bad_batch_input_is_400_on_email_ids(auth_client, user, payload):
    response = auth_client.post("/api/v1/emails/batch/classify", payload, format="json")

    assert response.status_code == 400
    assert "email_ids" in response.json()
    assert not BatchJob.objects.exists()


def test_100000_ids_are_refused_by_their_count_before_any_is_validated(auth_client):
    # Before: every id was validated and reported, a 3.4 MB error body after ~2 s.
    response = auth_client.post(
        "/api/v1/emails/batch/classify", {"email_ids": ["x"] * 100_000}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"email_ids": ["At most 100 ids per batch."]}
    assert not BatchJob.objects.exists()


def test_invalid_ids_are_reported_five_at_most(auth_client):
    response = auth_client.post(
        "/api/v1/emails/batch/classify", {"email_ids": ["y" * 1000] * 100}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "email_ids": {str(index): ["Must be a valid UUID."] for index in range(5)}
    }


def test_unknown_ids_are_named_five_at_most(auth_client):
    ids = [str(uuid.uuid4()) for _ in range(100)]

    response = auth_client.post("/api/v1/emails/batch/process", {"email_ids": ids}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "email_ids": [f"Unknown email ids: {', '.join(ids[:5])} and 95 more."]
    }
    assert not BatchJob.objects.exists()


def test_batch_of_another_users_email_is_400_without_its_data(auth_client, other_email):
    response = auth_client.post(
        "/api/v1/emails/batch/process", {"email_ids": [str(other_email.id)]}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"email_ids": [f"Unknown email ids: {other_email.id}."]}


def test_cancel_a_finished_job_is_409(auth_client, user):
    job = BatchJob.objects.create(owner=user, kind="sync", status="completed")
    assert auth_client.post(f"/api/v1/emails/batch/{job.id}/cancel").status_code == 409


def test_schema_and_docs_are_served(api_client):
    schema = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/emails/batch/process/" in paths
    assert "/api/v1/drafts/{draft_id}/approve/" in paths
    docs = api_client.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_a_page_of_emails_costs_the_same_queries_whatever_its_size(
    auth_client, user, django_assert_max_num_queries
):
    # Token user, count, page: no query per email.
    EmailFactory.create_batch(60, owner=user)
    with django_assert_max_num_queries(3):
        response = auth_client.get("/api/v1/emails/?page_size=5")
    assert len(response.json()["results"]) == 5
    with django_assert_max_num_queries(3):
        response = auth_client.get("/api/v1/emails/?page_size=50")
    assert len(response.json()["results"]) == 50


def test_approving_reads_each_row_once_per_transaction(
    auth_client, user, events, django_assert_max_num_queries
):
    # Token user; then in each of two transactions (approved, sent) the locked draft with its
    # email (the lock's read checks the owner too), its update and the event; the email's
    # update. No read of the draft before it is locked, no re-read of a locked row before its
    # save, no owner look-up per event (19 before).
    draft = DraftFactory(email=EmailFactory(owner=user), requires_approval=True)
    # SQLite takes two statements for what PostgreSQL's event write does in one.
    with django_assert_max_num_queries(12 if connection.vendor == "postgresql" else 14) as captured:
        response = auth_client.post(f"/api/v1/drafts/{draft.id}/approve")
    # The user is read for the token only: the reply's From comes from that read.
    assert sum('"users_user"' in query["sql"] for query in captured.captured_queries) == 1
    assert response.json()["status"] == "sent"
    assert [t for t, _ in events(user)][-2:] == ["draft_approved", "email_sent"]
