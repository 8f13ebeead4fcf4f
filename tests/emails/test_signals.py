"""Signals publish on real transitions only: a no-op save publishes nothing, and an admin edit
of a draft's status notifies like the API."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from emails.models import Draft, DraftStatus, Email
from tests.emails.factories import DraftFactory, EmailFactory

pytestmark = pytest.mark.django_db


def test_saves_that_change_nothing_tracked_publish_nothing(user, events):
    draft = DraftFactory(email=EmailFactory(owner=user, classification="inquiry", confidence=0.9))
    before = events(user)

    with transaction.atomic():
        draft.email.save()
        draft.email.is_read = True
        draft.email.save()
        draft.save()
        draft.body = "edited"
        draft.save()

    assert events(user) == before


def _owner_lookups(queries) -> int:
    # The draft's row never names its owner: reading it is a query on the emails table.
    return sum('"emails_email"' in query["sql"] for query in queries)


def test_a_draft_save_that_publishes_nothing_runs_no_owner_query(
    user, events, django_assert_num_queries
):
    draft = DraftFactory(email=EmailFactory(owner=user))
    before = events(user)
    draft.body = "edited"

    with django_assert_num_queries(2) as captured:  # the stored status, then the update
        draft.save()

    assert _owner_lookups(captured.captured_queries) == 0
    assert events(user) == before


def test_a_draft_save_that_publishes_looks_its_owner_up_at_most_once(user, events):
    email = EmailFactory(owner=user)
    with CaptureQueriesContext(connection) as captured:
        draft = Draft.objects.create(email=email, body="Yes.", status=DraftStatus.APPROVED)

    assert _owner_lookups(captured.captured_queries) == 0  # the draft carries its loaded email
    ids = {"draft_id": str(draft.id), "email_id": str(email.id)}
    assert events(user)[-2:] == [
        ("draft_ready", {**ids, "requires_approval": True}),
        ("draft_approved", ids),
    ]
    draft = Draft.objects.get(pk=draft.pk)  # its email not loaded: one look-up
    draft.status = DraftStatus.SENT
    with CaptureQueriesContext(connection) as captured:
        draft.save(update_fields=["status"])
    assert _owner_lookups(captured.captured_queries) == 1
    assert events(user)[-1] == ("email_sent", ids)


def test_a_stale_instance_is_judged_against_the_stored_row(user, events):
    draft = DraftFactory(email=EmailFactory(owner=user))
    stale = Draft.objects.get(pk=draft.pk)
    draft.status = DraftStatus.APPROVED
    draft.save()

    stale.status = DraftStatus.APPROVED
    stale.save()  # already approved in the database: no second draft_approved

    assert [t for t, _ in events(user)].count("draft_approved") == 1


def test_a_classification_change_publishes_and_a_rollback_does_not(user, events):
    email = EmailFactory(owner=user)

    with pytest.raises(RuntimeError), transaction.atomic():
        email.classification, email.confidence = "spam", 0.95
        email.save()
        raise RuntimeError

    assert [t for t, _ in events(user)] == ["email_received"]
    email = Email.objects.get(pk=email.pk)
    email.classification, email.confidence = "other", 0.6
    email.save(update_fields=["classification", "confidence"])
    assert events(user)[-1] == (
        "email_classified",
        {"email_id": str(email.id), "classification": "other", "confidence": 0.6},
    )


def test_an_admin_status_edit_notifies_like_the_api(client, make_user, events):
    staff = make_user(is_staff=True, is_superuser=True)
    draft = DraftFactory(email=EmailFactory(owner=staff))
    client.force_login(staff)

    response = client.post(
        f"/admin/emails/draft/{draft.pk}/change/",
        {
            "email": str(draft.email_id),
            "subject": draft.subject,
            "body": draft.body,
            "status": "rejected",
            "rejection_reason": "Wrong tone",
            "message_id": "",
            "error": "",
            "sent_at_0": "",
            "sent_at_1": "",
        },
    )

    assert response.status_code == 302, response.content
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.REJECTED
    assert events(staff)[-1] == (
        "draft_rejected",
        {"draft_id": str(draft.id), "email_id": str(draft.email_id), "reason": "Wrong tone"},
    )
