"""Every service of the email domain: the database state it leaves and the exact events it
stores, in order (the event store is what the sockets replay)."""

import uuid

import pytest
from django.core import mail
from django.db import transaction
from django.http import Http404

from emails import services
from emails.models import (
    BatchJob,
    BatchKind,
    BatchStatus,
    Draft,
    DraftStatus,
    Email,
    EmailStatus,
    MailAccount,
)
from emails.sources import MailSourceError
from tests.emails.factories import DraftFactory, EmailFactory

pytestmark = pytest.mark.django_db

SPAM = {
    "subject": "CONGRATULATIONS!!! You are our WINNER",
    "sender": "Prize Department <winner@lucky-draw-prizes.xyz>",
    "body": "Click here to claim your prize now. Act now, 100% free!",
}
COMPLAINT = {
    "subject": "Very disappointed with the outage",
    "sender": "Mark Feldman <mark@globex.com>",
    "body": "This is unacceptable. I expect a refund.",
}


# --- sync -----------------------------------------------------------------------------------


def test_sync_stores_a_few_demo_emails_oldest_first_with_one_email_received_each(user, events):
    emails = services.email_sync(user=user)

    assert len(emails) == 3
    stored = list(Email.objects.filter(owner=user).order_by("received_at"))
    assert [e.id for e in stored] == [e.id for e in emails]
    assert stored[0].subject == "Question about enterprise pricing"
    assert stored[0].sender == "John Doe <john.doe@acme-corp.com>"
    assert all(e.status == EmailStatus.PENDING and not e.classification for e in stored)
    assert events(user) == [
        ("email_received", {"email_id": str(e.id), "subject": e.subject, "sender": e.sender})
        for e in stored
    ]


def test_each_sync_delivers_the_next_demo_emails_and_never_a_duplicate(user, events):
    first = services.email_sync(user=user)
    second = services.email_sync(user=user)

    assert {e.source_message_id for e in first}.isdisjoint(e.source_message_id for e in second)
    assert Email.objects.filter(owner=user).count() == 6
    assert MailAccount.objects.get(owner=user).state["resume"] == {"cursor": 6}
    assert [t for t, _ in events(user)] == ["email_received"] * 6


def test_a_broken_source_raises_and_writes_nothing(user, settings, tmp_path, events):
    settings.EMAILS_SOURCE = f"mbox://{tmp_path}/missing.mbox"

    with pytest.raises(MailSourceError, match=r"missing\.mbox"):
        services.email_sync(user=user)

    assert not Email.objects.filter(owner=user).exists()
    assert events(user) == []


def test_a_sync_that_rolls_back_publishes_nothing(user, events):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.email_sync(user=user)
        raise RuntimeError("the caller fails after the sync")

    assert not Email.objects.filter(owner=user).exists()
    assert events(user) == []


def test_users_are_isolated(user, other_user, events):
    services.email_sync(user=user)

    assert not Email.objects.filter(owner=other_user).exists()
    assert events(other_user) == []


# --- process --------------------------------------------------------------------------------


def test_process_classifies_then_drafts_a_reply(user, events):
    email = EmailFactory(owner=user)

    email = services.email_process(email=email)

    draft = Draft.objects.get(email=email)
    assert email.classification == "inquiry"
    assert 0.8 <= email.confidence <= 1
    assert email.classification_reasons
    assert email.status == EmailStatus.DRAFTED
    assert draft.status == DraftStatus.PENDING
    assert draft.requires_approval is False
    assert draft.subject == "Re: Question about enterprise pricing"
    assert draft.body.startswith("Hi John,")
    assert events(user) == [
        (
            "email_received",
            {"email_id": str(email.id), "subject": email.subject, "sender": email.sender},
        ),
        (
            "email_classified",
            {
                "email_id": str(email.id),
                "classification": "inquiry",
                "confidence": email.confidence,
            },
        ),
        (
            "draft_ready",
            {"draft_id": str(draft.id), "email_id": str(email.id), "requires_approval": False},
        ),
    ]


def test_a_complaint_needs_approval(user):
    email = services.email_process(email=EmailFactory(owner=user, **COMPLAINT))

    assert email.classification == "complaint"
    assert email.status == EmailStatus.NEEDS_REVIEW
    assert email.drafts.get().requires_approval is True


def test_spam_is_classified_and_closed_without_a_draft(user, events):
    email = services.email_process(email=EmailFactory(owner=user, **SPAM))

    assert email.classification == "spam"
    assert email.status == EmailStatus.REJECTED
    assert not email.drafts.exists()
    assert [t for t, _ in events(user)] == ["email_received", "email_classified"]


@pytest.mark.parametrize("status", [EmailStatus.SENT, EmailStatus.DRAFTED, EmailStatus.PROCESSING])
def test_process_refuses_an_email_in_the_wrong_status(user, events, status):
    email = EmailFactory(owner=user, status=status)

    with pytest.raises(services.StatusConflict):
        services.email_process(email=email)

    email.refresh_from_db()
    assert email.status == status and not email.classification
    assert [t for t, _ in events(user)] == ["email_received"]


def test_classify_again_with_the_same_result_publishes_nothing_new(user, events):
    email = services.email_classify(email=EmailFactory(owner=user))
    services.email_classify(email=email)

    assert [t for t, _ in events(user)] == ["email_received", "email_classified"]


# --- drafts ---------------------------------------------------------------------------------


def test_approve_publishes_approved_then_sent_and_sends_a_threaded_reply(user, events):
    email = services.email_process(
        email=EmailFactory(
            owner=user,
            source_message_id="<orig-1@acme-corp.com>",
            references="<root@acme-corp.com>",
        )
    )
    draft = email.drafts.get()

    draft = services.draft_approve(user=user, draft_id=draft.id)

    assert draft.status == DraftStatus.SENT and draft.sent_at and draft.error == ""
    assert Email.objects.get(pk=email.pk).status == EmailStatus.SENT
    [message] = mail.outbox
    assert message.to == ["john.doe@acme-corp.com"]
    assert message.from_email == user.email
    assert message.subject == draft.subject
    assert message.extra_headers["In-Reply-To"] == "<orig-1@acme-corp.com>"
    assert message.extra_headers["References"] == "<root@acme-corp.com> <orig-1@acme-corp.com>"
    assert message.extra_headers["Message-ID"] == draft.message_id
    ids = {"draft_id": str(draft.id), "email_id": str(email.id)}
    assert events(user)[-2:] == [("draft_approved", ids), ("email_sent", ids)]


def test_a_transport_failure_leaves_the_draft_failed_and_a_retry_sends_it(user, settings, events):
    from tests.support.redis import free_port

    draft = DraftFactory(email=EmailFactory(owner=user))
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 2

    draft = services.draft_approve(user=user, draft_id=draft.id)

    assert draft.status == DraftStatus.FAILED
    assert "ConnectionRefusedError" in draft.error
    assert Email.objects.get(pk=draft.email_id).status == EmailStatus.PENDING
    ids = {"draft_id": str(draft.id), "email_id": str(draft.email_id)}
    assert events(user)[-2:] == [
        ("draft_ready", {**ids, "requires_approval": False}),
        ("draft_approved", ids),
    ]

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    draft = services.draft_retry(user=user, draft_id=draft.id)

    assert draft.status == DraftStatus.SENT and draft.error == ""
    assert len(mail.outbox) == 1
    assert events(user)[-2:] == [("draft_approved", ids), ("email_sent", ids)]


@pytest.mark.parametrize("status", [DraftStatus.REJECTED, DraftStatus.SENT, DraftStatus.APPROVED])
def test_approve_refuses_a_draft_that_is_not_pending(user, events, status):
    draft = DraftFactory(email=EmailFactory(owner=user), status=status)
    before = events(user)

    with pytest.raises(services.StatusConflict):
        services.draft_approve(user=user, draft_id=draft.id)

    assert Draft.objects.get(pk=draft.pk).status == status
    assert events(user) == before
    assert mail.outbox == []


@pytest.mark.parametrize(
    "change",
    [
        lambda user, draft: services.draft_approve(user=user, draft_id=draft.id),
        lambda user, draft: services.draft_retry(user=user, draft_id=draft.id),
        lambda user, draft: services.draft_reject(user=user, draft_id=draft.id),
        lambda user, draft: services.draft_update(user=user, draft_id=draft.id, body="Mine now"),
    ],
    ids=["approve", "retry", "reject", "update"],
)
def test_a_draft_is_changed_only_by_its_owner(user, other_user, events, change):
    # The owner is checked by the same read that locks the draft: no read before it.
    draft = DraftFactory(email=EmailFactory(owner=other_user), status=DraftStatus.FAILED)
    before = events(other_user)

    with pytest.raises(Http404):
        change(user, draft)
    with pytest.raises(Http404):
        change(user, Draft(pk=uuid.uuid4()))

    unchanged = Draft.objects.get(pk=draft.pk)
    assert (unchanged.status, unchanged.body) == (DraftStatus.FAILED, draft.body)
    assert events(other_user) == before
    assert mail.outbox == []


def test_retry_refuses_a_pending_draft(user):
    with pytest.raises(services.StatusConflict):
        services.draft_retry(user=user, draft_id=DraftFactory(email=EmailFactory(owner=user)).id)


@pytest.mark.parametrize("reason", ["Too formal", None])
def test_reject_publishes_the_reason_and_reopens_the_email(user, events, reason):
    draft = DraftFactory(email=EmailFactory(owner=user))

    draft = services.draft_reject(user=user, draft_id=draft.id, reason=reason)

    assert draft.status == DraftStatus.REJECTED
    assert Email.objects.get(pk=draft.email_id).status == EmailStatus.REJECTED
    assert events(user)[-1] == (
        "draft_rejected",
        {"draft_id": str(draft.id), "email_id": str(draft.email_id), "reason": reason},
    )
    # A rejected email can be processed again, with a fresh draft.
    email = services.email_process(email=draft.email)
    assert email.drafts.filter(status=DraftStatus.PENDING).count() == 1


def test_update_edits_a_pending_draft_without_an_event(user, events):
    draft = DraftFactory(email=EmailFactory(owner=user))
    before = events(user)

    draft = services.draft_update(user=user, draft_id=draft.id, body="Shorter reply.")

    assert Draft.objects.get(pk=draft.pk).body == "Shorter reply."
    assert events(user) == before


def test_update_refuses_a_sent_draft(user):
    draft = DraftFactory(email=EmailFactory(owner=user), status=DraftStatus.SENT)
    with pytest.raises(services.StatusConflict):
        services.draft_update(user=user, draft_id=draft.id, body="too late")


# --- batch jobs -----------------------------------------------------------------------------


def run_job(django_capture_on_commit_callbacks, **kwargs) -> BatchJob:
    with django_capture_on_commit_callbacks(execute=True):
        job = services.batch_job_start(**kwargs)
    assert job.status == BatchStatus.QUEUED and job.processed == 0
    return BatchJob.objects.get(pk=job.pk)


def test_batch_process_reports_every_item_when_unthrottled(
    user, settings, events, django_capture_on_commit_callbacks
):
    settings.EMAILS_BATCH_PROGRESS_INTERVAL = 0
    ok = [EmailFactory(owner=user), EmailFactory(owner=user, **COMPLAINT)]
    sent = EmailFactory(owner=user, status=EmailStatus.SENT)
    ids = [ok[0].id, sent.id, ok[1].id]
    before = len(events(user))

    job = run_job(
        django_capture_on_commit_callbacks, user=user, kind=BatchKind.PROCESS, email_ids=ids
    )

    assert job.status == BatchStatus.COMPLETED
    assert (job.total, job.processed, job.succeeded, job.failed) == (3, 3, 2, 1)
    assert job.errors == [
        {"item": str(sent.id), "error": "Email is sent; only pending or rejected emails."}
    ]
    assert job.started_at and job.finished_at
    job_id = str(job.id)

    def progress(n):
        return (
            "batch_progress",
            {"job_id": job_id, "processed": n, "total": 3, "percentage": n * 100 // 3},
        )

    assert [t for t, _ in events(user)[before:]] == [
        "email_classified",
        "draft_ready",
        "batch_progress",
        "batch_progress",
        "email_classified",
        "draft_ready",
        "batch_progress",
        "batch_complete",
    ]
    assert [e for e in events(user)[before:] if e[0].startswith("batch")] == [
        progress(1),
        progress(2),
        progress(3),
        ("batch_complete", {"job_id": job_id, "status": "completed", "succeeded": 2, "failed": 1}),
    ]


def test_batch_progress_is_throttled_but_always_reports_the_final_item(
    user, settings, events, django_capture_on_commit_callbacks
):
    settings.EMAILS_BATCH_PROGRESS_INTERVAL = 60
    ids = [EmailFactory(owner=user).id for _ in range(5)]

    job = run_job(
        django_capture_on_commit_callbacks, user=user, kind=BatchKind.CLASSIFY, email_ids=ids
    )

    batch = [
        (t, d["processed"] if t == "batch_progress" else d["status"])
        for t, d in events(user)
        if t.startswith("batch")
    ]
    assert batch == [("batch_progress", 1), ("batch_progress", 5), ("batch_complete", "completed")]
    assert job.succeeded == 5
    assert Email.objects.filter(owner=user, classification="inquiry").count() == 5


def test_a_batch_whose_every_item_fails_is_failed(user, events, django_capture_on_commit_callbacks):
    ids = [EmailFactory(owner=user, status=EmailStatus.SENT).id for _ in range(2)]

    job = run_job(
        django_capture_on_commit_callbacks, user=user, kind=BatchKind.PROCESS, email_ids=ids
    )

    assert job.status == BatchStatus.FAILED
    assert events(user)[-1] == (
        "batch_complete",
        {"job_id": str(job.id), "status": "failed", "succeeded": 0, "failed": 2},
    )


def test_batch_sync_stores_new_mail_then_completes(
    user, events, django_capture_on_commit_callbacks
):
    job = run_job(django_capture_on_commit_callbacks, user=user, kind=BatchKind.SYNC)

    assert (job.status, job.total, job.succeeded) == (BatchStatus.COMPLETED, 3, 3)
    assert [t for t, _ in events(user)][-2:] == ["batch_progress", "batch_complete"]
    assert [t for t, _ in events(user)].count("email_received") == 3
    assert MailAccount.objects.get(owner=user).state["resume"] == {"cursor": 3}


def test_batch_sync_from_a_broken_source_fails_with_its_message(
    user, settings, events, django_capture_on_commit_callbacks
):
    settings.EMAILS_SOURCE = "maildir:///nonexistent/Maildir"

    job = run_job(django_capture_on_commit_callbacks, user=user, kind=BatchKind.SYNC)

    assert job.status == BatchStatus.FAILED
    assert job.errors == [
        {"item": None, "error": "no maildir at /nonexistent/Maildir (needs cur/ and new/)"}
    ]
    assert events(user) == [
        ("batch_complete", {"job_id": str(job.id), "status": "failed", "succeeded": 0, "failed": 0})
    ]


def test_an_empty_sync_reports_100_percent(
    user, settings, events, django_capture_on_commit_callbacks
):
    settings.EMAILS_DEMO_PER_SYNC = 0

    job = run_job(django_capture_on_commit_callbacks, user=user, kind=BatchKind.SYNC)

    assert job.status == BatchStatus.COMPLETED
    assert events(user) == [
        ("batch_progress", {"job_id": str(job.id), "processed": 0, "total": 0, "percentage": 100}),
        (
            "batch_complete",
            {"job_id": str(job.id), "status": "completed", "succeeded": 0, "failed": 0},
        ),
    ]


def test_a_cancelled_job_does_not_run(user, events):
    email = EmailFactory(owner=user)
    job = services.batch_job_start(user=user, kind=BatchKind.PROCESS, email_ids=[email.id])

    services.batch_job_cancel(job=job)
    job = services.batch_job_run(job_id=job.id)

    assert job.status == BatchStatus.CANCELLED and job.processed == 0
    assert Email.objects.get(pk=email.pk).status == EmailStatus.PENDING
    assert events(user)[-1] == (
        "batch_complete",
        {"job_id": str(job.id), "status": "cancelled", "succeeded": 0, "failed": 0},
    )
    with pytest.raises(services.StatusConflict):
        services.batch_job_cancel(job=job)


def test_a_job_start_that_rolls_back_enqueues_nothing(user, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.batch_job_start(user=user, kind=BatchKind.SYNC)
        raise RuntimeError("rolled back")

    assert callbacks == []
    assert not BatchJob.objects.exists()
