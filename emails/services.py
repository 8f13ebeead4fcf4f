"""Every state change of an email, draft, batch job or mail account.

Each change runs in a transaction; the signals in emails/signals.py publish its events inside
that transaction, so they are delivered only if it commits. Slow I/O (reading a mail source,
talking to the mail transport) happens outside any transaction.
"""

import email.utils
import logging
import time
import uuid
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from emails import selectors, signals
from emails.classifier import ClassifierInput, get_classifier
from emails.drafting import draft_compose
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
from emails.sources import IncomingMessage, MailSourceError, mail_source_from_url, source_label
from notifications.events import EventType
from notifications.publish import publish_event

logger = logging.getLogger(__name__)


class StatusConflict(Exception):
    """The object is in a status that does not allow this action (HTTP 409)."""


PROCESSABLE = (EmailStatus.PENDING, EmailStatus.REJECTED)
EDITABLE_DRAFT = (DraftStatus.PENDING, DraftStatus.FAILED)
REJECTABLE_DRAFT = (DraftStatus.PENDING, DraftStatus.FAILED)
RETRYABLE_DRAFT = (DraftStatus.FAILED, DraftStatus.APPROVED)


# --- sync -----------------------------------------------------------------------------------


def _mail_account(user) -> MailAccount:
    account, _ = MailAccount.objects.get_or_create(owner=user)
    return account


def _fetch_new(user, *, limit: int) -> tuple[list[IncomingMessage], dict]:
    """Read new messages from the user's source (no transaction held while it talks)."""
    account = _mail_account(user)
    url = account.source_url or settings.EMAILS_SOURCE
    label = source_label(url)
    state = account.state.get("resume", {}) if account.state.get("source") == label else {}
    known = set(Email.objects.filter(owner=user).values_list("source_message_id", flat=True))
    result = mail_source_from_url(url).fetch(state=state, limit=limit, is_known=known.__contains__)
    return result.messages, {"source": label, "resume": result.state}


def _email_store(user, message: IncomingMessage) -> Email | None:
    # Inside the caller's transaction, after the account lock: a concurrent sync of the same
    # messages has either committed them (skip) or waits for us.
    if Email.objects.filter(owner=user, source_message_id=message.message_id).exists():
        return None
    return Email.objects.create(
        owner=user,
        source_message_id=message.message_id,
        thread_id=message.thread_id,
        references=message.references,
        subject=message.subject,
        sender=message.sender,
        recipient=message.recipient,
        body=message.body,
        received_at=message.received_at,
    )


def _mail_account_save_state(user, state: dict) -> None:
    account = MailAccount.objects.select_for_update().get(owner=user)
    account.state = state
    account.last_synced_at = timezone.now()
    account.save(update_fields=["state", "last_synced_at"])


def email_sync(*, user, limit: int | None = None) -> list[Email]:
    """Store the new messages of the user's mail source, oldest first; one email_received each.

    Raises MailSourceError when the source cannot be read; then nothing is stored.
    """
    messages, state = _fetch_new(user, limit=limit or settings.EMAILS_SYNC_LIMIT)
    with transaction.atomic():
        _mail_account_save_state(user, state)
        stored = [_email_store(user, message) for message in messages]
    return [email for email in stored if email is not None]


# --- classify and process -------------------------------------------------------------------


def _locked_email(email: Email) -> Email:
    return Email.objects.select_for_update().get(pk=email.pk)


def _classify_into(email: Email) -> None:
    result = get_classifier().classify(
        ClassifierInput(
            subject=email.subject,
            sender=email.sender,
            body=email.body,
            references=email.references,
        )
    )
    email.classification = result.label
    email.confidence = result.confidence
    email.classification_reasons = result.reasons


def email_classify(*, email: Email) -> Email:
    """Classify the email (again); email_classified when the label or confidence changes."""
    with transaction.atomic():
        email = _locked_email(email)
        _classify_into(email)
        email.save(update_fields=["classification", "confidence", "classification_reasons"])
    return email


def email_process(*, email: Email) -> Email:
    """Classify the email and draft a reply: email_classified, then draft_ready.

    Spam is closed as `rejected` without a draft. Raises StatusConflict unless the email is
    pending or its last draft was rejected.
    """
    with transaction.atomic():
        email = _locked_email(email)
        if email.status not in PROCESSABLE:
            raise StatusConflict(f"Email is {email.status}; only pending or rejected emails.")
        previous_status = email.status
        email.status = EmailStatus.PROCESSING
        email.save(update_fields=["status", "updated_at"])
    # Classification may become a slow model call: it runs without the row lock, and the
    # `processing` status keeps a second process request out meanwhile.
    try:
        with transaction.atomic():
            email = _locked_email(email)
            _classify_into(email)
            content = draft_compose(
                subject=email.subject,
                sender=email.sender,
                classification=email.classification,
                confidence=email.confidence,
                signature=settings.EMAILS_SIGNATURE,
            )
            if content is None:
                email.status = EmailStatus.REJECTED
            else:
                email.status = (
                    EmailStatus.NEEDS_REVIEW if content.requires_approval else EmailStatus.DRAFTED
                )
            email.save()
            if content is not None:
                Draft.objects.create(
                    email=email,
                    subject=content.subject,
                    body=content.body,
                    requires_approval=content.requires_approval,
                )
    except Exception:
        Email.objects.filter(pk=email.pk, status=EmailStatus.PROCESSING).update(
            status=previous_status
        )
        raise
    return email


def email_mark_read(*, email: Email, is_read: bool) -> Email:
    with transaction.atomic():
        email = _locked_email(email)
        email.is_read = is_read
        email.save(update_fields=["is_read", "updated_at"])
    return email


# --- drafts ---------------------------------------------------------------------------------


def _locked_draft(*, user, draft_id: uuid.UUID | str) -> Draft:
    draft = selectors.draft_lock_for_user(user=user, draft_id=draft_id)
    signals.remember_locked_values(draft)
    signals.remember_locked_values(draft.email)
    return draft


def draft_update(
    *, user, draft_id: uuid.UUID | str, subject: str | None = None, body: str | None = None
) -> Draft:
    """Edit the user's pending or failed draft. Raises StatusConflict otherwise, Http404 for
    an unknown id or another user's draft."""
    with transaction.atomic():
        draft = _locked_draft(user=user, draft_id=draft_id)
        if draft.status not in EDITABLE_DRAFT:
            raise StatusConflict(f"Draft is {draft.status}; only pending or failed drafts.")
        if subject is not None:
            draft.subject = subject
        if body is not None:
            draft.body = body
        draft.save(update_fields=["subject", "body", "updated_at"])
    return draft


def draft_reject(*, user, draft_id: uuid.UUID | str, reason: str | None = None) -> Draft:
    """Reject the user's pending or failed draft: draft_rejected. The email may be processed
    again."""
    with transaction.atomic():
        draft = _locked_draft(user=user, draft_id=draft_id)
        if draft.status not in REJECTABLE_DRAFT:
            raise StatusConflict(f"Draft is {draft.status}; only pending or failed drafts.")
        draft.status = DraftStatus.REJECTED
        draft.rejection_reason = reason or ""
        draft.save(update_fields=["status", "rejection_reason", "updated_at"])
        draft.email.status = EmailStatus.REJECTED
        draft.email.save(update_fields=["status", "updated_at"])
    return draft


def _draft_mark_approved(user, draft_id: uuid.UUID | str, allowed: Iterable[str]) -> Draft:
    with transaction.atomic():
        draft = _locked_draft(user=user, draft_id=draft_id)
        if draft.status not in allowed:
            raise StatusConflict(f"Draft is {draft.status}; cannot send it from this status.")
        # Also taken by a retry, so two concurrent sends of one draft cannot both pass here.
        draft.status = DraftStatus.APPROVED
        draft.error = ""
        draft.save(update_fields=["status", "error", "updated_at"])
    return draft


def draft_approve(*, user, draft_id: uuid.UUID | str) -> Draft:
    """Approve the user's pending draft (draft_approved) and send it (email_sent, or
    `failed`). Http404 for an unknown id or another user's draft."""
    return _draft_send(_draft_mark_approved(user, draft_id, (DraftStatus.PENDING,)))


def draft_retry(*, user, draft_id: uuid.UUID | str) -> Draft:
    """Send the user's failed (or stuck approved) draft again: draft_approved, then
    email_sent. Http404 for an unknown id or another user's draft."""
    return _draft_send(_draft_mark_approved(user, draft_id, RETRYABLE_DRAFT))


def _reply_message(draft: Draft) -> EmailMessage:
    original = draft.email
    _, to_address = email.utils.parseaddr(original.sender)
    if "@" not in to_address:
        raise ValueError(f"the sender {original.sender!r} has no usable address")
    from_email = settings.EMAILS_REPLY_FROM or original.owner.email
    domain = from_email.rpartition("@")[2].rstrip(">") or "reasonflow.local"
    headers = {"Message-ID": email.utils.make_msgid(domain=domain)}
    if original.source_message_id.startswith("<"):
        headers["In-Reply-To"] = original.source_message_id
        headers["References"] = f"{original.references} {original.source_message_id}".strip()
    return EmailMessage(
        subject=draft.subject,
        body=draft.body,
        from_email=from_email,
        to=[to_address],
        headers=headers,
    )


def _draft_send(draft: Draft) -> Draft:
    message_id, error = "", ""
    try:
        message = _reply_message(draft)
        message_id = message.extra_headers["Message-ID"]
        if message.send(fail_silently=False) != 1:
            error = "The mail transport did not accept the message."
    except Exception as exc:  # any transport failure is the draft's, not the request's
        logger.warning("sending draft %s failed", draft.pk, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
    with transaction.atomic():
        draft = _locked_draft(user=draft.email.owner, draft_id=draft.pk)
        if error:
            draft.status, draft.error = DraftStatus.FAILED, error
            draft.save(update_fields=["status", "error", "updated_at"])
            return draft
        draft.status, draft.message_id, draft.sent_at = DraftStatus.SENT, message_id, timezone.now()
        draft.save(update_fields=["status", "message_id", "sent_at", "updated_at"])
        draft.email.status = EmailStatus.SENT
        draft.email.save(update_fields=["status", "updated_at"])
    return draft


# --- batch jobs -----------------------------------------------------------------------------

# The task that runs a job, by name: tasks.py calls this module, so importing it here would
# make the two modules import each other.
BATCH_JOB_TASK = "emails.tasks.batch_job_run_task"


def batch_job_start(*, user, kind: str, email_ids: list[uuid.UUID] | None = None) -> BatchJob:
    """Create a queued job and enqueue it once the job row is committed."""
    email_ids = [str(email_id) for email_id in dict.fromkeys(email_ids or [])]
    with transaction.atomic():
        job = BatchJob.objects.create(
            owner=user, kind=kind, email_ids=email_ids, total=len(email_ids)
        )
        transaction.on_commit(lambda: import_string(BATCH_JOB_TASK).enqueue(str(job.id)))
    return job


def batch_job_cancel(*, job: BatchJob) -> BatchJob:
    """Stop a queued or running job after its current item: batch_complete `cancelled`."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job.pk)
        if job.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING):
            raise StatusConflict(f"Job is {job.status}; only queued or running jobs.")
        job.status = BatchStatus.CANCELLED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at", "updated_at"])
    return job


class _Progress:
    """batch_progress at most every EMAILS_BATCH_PROGRESS_INTERVAL seconds, and for the end."""

    def __init__(self) -> None:
        self.published_at = float("-inf")

    def publish(self, job: BatchJob, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.published_at < settings.EMAILS_BATCH_PROGRESS_INTERVAL:
            return
        self.published_at = now
        publish_event(
            user_id=job.owner_id,
            event_type=EventType.BATCH_PROGRESS,
            data={
                "job_id": job.id,
                "processed": job.processed,
                "total": job.total,
                "percentage": job.percentage,
            },
        )


def _item_label(item) -> str:
    return item.message_id if isinstance(item, IncomingMessage) else str(item)


def _run_items(job: BatchJob, items: list, handle: Callable) -> bool:
    """Run every item in its own transaction with the job's counters; False if cancelled."""
    progress = _Progress()
    for item in items:
        with transaction.atomic():
            job = BatchJob.objects.select_for_update().get(pk=job.pk)
            if job.status != BatchStatus.RUNNING:
                return False
            try:
                with transaction.atomic():
                    handle(item)
            except Exception as exc:  # one bad item must not stop the batch
                if not isinstance(exc, StatusConflict | Email.DoesNotExist):
                    logger.exception("batch job %s: item %s failed", job.pk, _item_label(item))
                job.failed += 1
                job.errors = [*job.errors, {"item": _item_label(item), "error": str(exc)}]
            else:
                job.succeeded += 1
            job.processed += 1
            job.save(update_fields=["processed", "succeeded", "failed", "errors", "updated_at"])
            progress.publish(job, force=job.processed == job.total)
    return True


def _job_handler(job: BatchJob) -> tuple[list, Callable, dict | None]:
    user = job.owner
    if job.kind == BatchKind.SYNC:
        messages, state = _fetch_new(user, limit=settings.EMAILS_SYNC_LIMIT)
        return messages, lambda message: _email_store(user, message), state
    emails = Email.objects.filter(owner=user)
    action = email_classify if job.kind == BatchKind.CLASSIFY else email_process
    return (
        [uuid.UUID(email_id) for email_id in job.email_ids],
        lambda email_id: action(email=emails.get(pk=email_id)),
        None,
    )


def batch_job_run(*, job_id: uuid.UUID) -> BatchJob:
    """Run a queued job to its end: batch_progress (throttled), then batch_complete.

    A job that is not queued (cancelled, or already taken by another worker) is left alone.
    """
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.status != BatchStatus.QUEUED:
            return job
        job.status, job.started_at = BatchStatus.RUNNING, timezone.now()
        job.save(update_fields=["status", "started_at", "updated_at"])
    try:
        items, handle, sync_state = _job_handler(job)
    except MailSourceError as exc:
        return _batch_job_finish(job, error=str(exc))
    except Exception:
        _batch_job_finish(job, error="Internal error while preparing the job.")
        raise
    if job.kind == BatchKind.SYNC:
        BatchJob.objects.filter(pk=job.pk).update(total=len(items))
        job.total = len(items)
    try:
        if not items:
            with transaction.atomic():
                _Progress().publish(job, force=True)
        if not _run_items(job, items, handle):
            return BatchJob.objects.get(pk=job.pk)
        if sync_state is not None:
            # Only a sync that stored everything moves the source's resume point.
            with transaction.atomic():
                _mail_account_save_state(job.owner, sync_state)
    except Exception:
        _batch_job_finish(job, error="Internal error while running the job.")
        raise
    return _batch_job_finish(job)


def _batch_job_finish(job: BatchJob, *, error: str | None = None) -> BatchJob:
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job.pk)
        if job.status != BatchStatus.RUNNING:
            return job
        if error is not None:
            job.errors = [*job.errors, {"item": None, "error": error}]
            job.status = BatchStatus.FAILED
        elif job.processed and not job.succeeded:
            job.status = BatchStatus.FAILED
        else:
            job.status = BatchStatus.COMPLETED
        job.finished_at = timezone.now()
        job.save()
    return job
