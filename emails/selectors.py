"""Every read of emails, drafts and batch jobs, scoped to their owner (else 404)."""

import uuid

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from emails.models import BatchJob, Draft, Email


def email_list_for_user(
    *,
    user,
    status: str | None = None,
    classification: str | None = None,
    unread: bool | None = None,
) -> QuerySet[Email]:
    """The user's emails, newest first, optionally filtered."""
    emails = Email.objects.filter(owner=user)
    if status:
        emails = emails.filter(status=status)
    if classification:
        emails = emails.filter(classification=classification)
    if unread is not None:
        emails = emails.filter(is_read=not unread)
    return emails


def email_get_for_user(*, user, email_id: uuid.UUID | str) -> Email:
    """The user's email; Http404 for an unknown id or another user's email."""
    return get_object_or_404(Email.objects.filter(owner=user), pk=email_id)


def email_latest_draft(*, email: Email) -> Draft | None:
    return email.drafts.order_by("-created_at").first()


def draft_list_for_user(
    *, user, status: str | None = None, email_id: uuid.UUID | None = None
) -> QuerySet[Draft]:
    """The user's drafts, newest first, optionally filtered by status or email."""
    drafts = Draft.objects.filter(email__owner=user).select_related("email")
    if status:
        drafts = drafts.filter(status=status)
    if email_id:
        drafts = drafts.filter(email_id=email_id)
    return drafts


def draft_get_for_user(*, user, draft_id: uuid.UUID | str) -> Draft:
    """The user's draft; Http404 for an unknown id or another user's draft."""
    return get_object_or_404(
        Draft.objects.filter(email__owner=user).select_related("email"), pk=draft_id
    )


def batch_job_list_for_user(*, user) -> QuerySet[BatchJob]:
    return BatchJob.objects.filter(owner=user)


def batch_job_get_for_user(*, user, job_id: uuid.UUID | str) -> BatchJob:
    """The user's batch job; Http404 for an unknown id or another user's job."""
    return get_object_or_404(BatchJob.objects.filter(owner=user), pk=job_id)


def email_ids_missing_for_user(*, user, email_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The ids among `email_ids` that are not the user's emails (unknown or someone else's)."""
    found = set(Email.objects.filter(owner=user, pk__in=email_ids).values_list("pk", flat=True))
    return [email_id for email_id in email_ids if email_id not in found]
