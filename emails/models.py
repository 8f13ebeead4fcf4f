"""Email, Draft, BatchJob and each user's mail source: the rows the email domain changes."""

import uuid

from django.conf import settings
from django.db import models

from notifications import compat, events


# The values the event catalogue accepts (tests/emails/test_models.py holds them equal), kept as
# written-out members so that the classifier's and the drafts' tables can name each one.
class Classification(models.TextChoices):
    INQUIRY = "inquiry"
    MEETING_REQUEST = "meeting_request"
    COMPLAINT = "complaint"
    FOLLOW_UP = "follow_up"
    SPAM = "spam"
    OTHER = "other"


class EmailStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    DRAFTED = "drafted"
    NEEDS_REVIEW = "needs_review"
    SENT = "sent"
    REJECTED = "rejected"


class Email(compat.UpdatesBySql, models.Model):
    """One received message. `classification` is empty until the email is classified."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="emails"
    )
    source_message_id = models.CharField(max_length=255)
    thread_id = models.CharField(max_length=255, blank=True)
    references = models.TextField(blank=True)
    subject = models.TextField(blank=True)
    sender = models.CharField(max_length=998)
    recipient = models.CharField(max_length=998, blank=True)
    body = models.TextField(blank=True)
    received_at = models.DateTimeField()
    classification = models.CharField(max_length=32, choices=Classification, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    classification_reasons = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=EmailStatus, default=EmailStatus.PENDING)
    is_read = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "source_message_id"], name="email_owner_message_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(confidence__isnull=True)
                | models.Q(confidence__gte=0, confidence__lte=1),
                name="email_confidence_range",
            ),
        ]
        indexes = [
            # The list's whole ordering: a page is read from the index, not sorted from every
            # email of the owner (a sync stores many emails with one received_at).
            models.Index(
                fields=["owner", "-received_at", "-created_at"], name="email_owner_newest"
            ),
            models.Index(fields=["owner", "status"], name="email_owner_status"),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} from {self.sender}"


class DraftStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SENT = "sent"
    FAILED = "failed"


class Draft(compat.UpdatesBySql, models.Model):
    """A reply to an email, waiting for the user's approval before it is sent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="drafts")
    subject = models.TextField(blank=True)
    body = models.TextField()
    requires_approval = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=DraftStatus, default=DraftStatus.PENDING)
    rejection_reason = models.TextField(blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["email", "status"], name="draft_email_status")]

    def __str__(self) -> str:
        return f"Draft {self.status} for {self.email_id}"


class BatchKind(models.TextChoices):
    SYNC = "sync"
    CLASSIFY = "classify"
    PROCESS = "process"


class BatchStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job in one of these has ended; batch_complete carries it, so the catalogue says which.
BATCH_FINAL_STATUSES = tuple(BatchStatus(status) for status in events.BATCH_FINAL_STATUSES)


class BatchJob(compat.UpdatesBySql, models.Model):
    """A background run over many emails; `errors` holds one {"item", "error"} per failure."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batch_jobs"
    )
    kind = models.CharField(max_length=16, choices=BatchKind)
    status = models.CharField(max_length=16, choices=BatchStatus, default=BatchStatus.QUEUED)
    email_ids = models.JSONField(default=list, blank=True)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="batchjob_owner_created")]

    def __str__(self) -> str:
        return f"{self.kind} job {self.id} ({self.status})"

    @property
    def percentage(self) -> int:
        return 100 if self.total == 0 else self.processed * 100 // self.total


class MailAccount(models.Model):
    """Where a user's mail comes from and how far sync has read it.

    `source_url` names the source (see emails/sources.py); empty means the EMAILS_SOURCE
    setting. `state` is the source's resume point, kept per source so a new URL starts over.
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="mail_account",
    )
    source_url = models.CharField(max_length=1000, blank=True)
    state = models.JSONField(default=dict, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.owner_id}: {self.source_url or 'default source'}"
