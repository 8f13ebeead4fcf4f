"""Every read of emails, drafts and batch jobs, scoped to their owner (else 404)."""

import uuid

from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from emails.models import BatchJob, Draft, Email
from reasonflow.db import rows


def email_list_for_user(
    *,
    user,
    status: str | None = None,
    classification: str | None = None,
    unread: bool | None = None,
) -> rows.Listing:
    """The user's emails, newest first, optionally filtered: read a page at a time (the list
    endpoint's statements are built once, reasonflow.db.rows)."""
    where = {"owner": user.pk}
    if status:
        where["status"] = status
    if classification:
        where["classification"] = classification
    if unread is not None:
        where["is_read"] = not unread
    return rows.Listing(Email, where=where)


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


def draft_lock_for_user(*, user, draft_id: uuid.UUID | str) -> Draft:
    """The user's draft with its email, both locked until the transaction ends (as
    `select_for_update(of=("self", "email"))` locks them); the email's owner is `user`. Http404
    for an unknown id or another user's draft.

    The locking read of every draft action, an approval's two: its SQL is built once
    (reasonflow.db.rows), not by the ORM for each call.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError("a draft is locked inside a transaction")
    drafts, emails = rows.columns(Draft, connection), rows.columns(Email, connection)

    def write() -> str:
        lock = ""
        if connection.features.has_select_for_update_of:
            lock = f" FOR UPDATE OF {drafts.table}, {emails.table}"
        return (
            f"SELECT {drafts.sql}, {emails.sql} FROM {drafts.table} "  # noqa: S608
            f"INNER JOIN {emails.table} "
            f"ON {drafts.column('email', connection)} = {emails.column('id', connection)} "
            f"WHERE {drafts.column('id', connection)} = %s "
            f"AND {emails.column('owner', connection)} = %s{lock}"
        )

    sql = rows.statement("draft lock for user", connection, write)
    params = [drafts.value("id", draft_id, connection), emails.value("owner", user.pk, connection)]
    with rows.cursor(connection) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise Http404("No Draft matches the given query.")
    draft = drafts.load(connection, row)
    draft.email = emails.load(connection, row, drafts.width)
    draft.email.owner = user
    return draft


def batch_job_list_for_user(*, user) -> QuerySet[BatchJob]:
    return BatchJob.objects.filter(owner=user)


def batch_job_get_for_user(*, user, job_id: uuid.UUID | str) -> BatchJob:
    """The user's batch job; Http404 for an unknown id or another user's job."""
    return get_object_or_404(BatchJob.objects.filter(owner=user), pk=job_id)


def email_ids_missing_for_user(*, user, email_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The ids among `email_ids` that are not the user's emails (unknown or someone else's)."""
    found = set(Email.objects.filter(owner=user, pk__in=email_ids).values_list("pk", flat=True))
    return [email_id for email_id in email_ids if email_id not in found]
