"""Model transitions -> publish_event. Receivers only recognise a change and publish it.

The old values are read from the database just before the save (not cached at load time), so
a stale instance or an admin edit is judged against what was really stored. A service that
has just read the row under a lock (select_for_update) says so with remember_locked_values():
nobody can change the row before its save in that transaction, so the read is skipped.
"""

from django.db import transaction
from django.db.models.signals import post_save, pre_save

from emails.models import BATCH_FINAL_STATUSES, BatchJob, Draft, DraftStatus, Email
from notifications.events import EventType
from notifications.publish import publish_event

TRACKED = {
    Email: ("classification", "confidence"),
    Draft: ("status",),
    BatchJob: ("status",),
}


def remember_locked_values(instance) -> None:
    """`instance` was just read with select_for_update: its values are the stored ones for its
    next save in this transaction."""
    instance._stored_values = {field: getattr(instance, field) for field in TRACKED[type(instance)]}
    instance._stored_values_locked = True


def remember_stored_values(sender, instance, raw=False, update_fields=None, **kwargs):
    if raw or instance._state.adding:
        instance._stored_values = None
        return
    # Good for one save, and only inside a transaction (where the lock still holds).
    if instance.__dict__.pop("_stored_values_locked", False) and (
        transaction.get_connection().in_atomic_block
    ):
        return
    fields = TRACKED[sender]
    instance._stored_values = sender._base_manager.filter(pk=instance.pk).values(*fields).first()


def _changed(instance, field: str, created: bool, update_fields) -> bool:
    stored = getattr(instance, "_stored_values", None)
    if created or stored is None:
        return True
    if update_fields is not None and field not in update_fields:
        return False
    return stored[field] != getattr(instance, field)


def email_saved(sender, instance: Email, created, raw=False, update_fields=None, **kwargs):
    if raw:
        return
    if created:
        publish_event(
            user_id=instance.owner_id,
            event_type=EventType.EMAIL_RECEIVED,
            data={"email_id": instance.id, "subject": instance.subject, "sender": instance.sender},
        )
    classified = instance.classification and instance.confidence is not None
    if classified and any(
        _changed(instance, field, created, update_fields)
        for field in ("classification", "confidence")
    ):
        publish_event(
            user_id=instance.owner_id,
            event_type=EventType.EMAIL_CLASSIFIED,
            data={
                "email_id": instance.id,
                "classification": instance.classification,
                "confidence": instance.confidence,
            },
        )


DRAFT_STATUS_EVENTS = {
    DraftStatus.APPROVED: EventType.DRAFT_APPROVED,
    DraftStatus.REJECTED: EventType.DRAFT_REJECTED,
    DraftStatus.SENT: EventType.EMAIL_SENT,
}


def draft_saved(sender, instance: Draft, created, raw=False, update_fields=None, **kwargs):
    if raw:
        return
    event_type = DRAFT_STATUS_EVENTS.get(instance.status)
    status_changed = event_type is not None and _changed(instance, "status", created, update_fields)
    if not created and not status_changed:
        return  # most saves (body edits, sending bookkeeping): no event, so no owner lookup
    if Draft.email.is_cached(instance):
        owner_id = instance.email.owner_id
    else:
        owner_id = Email.objects.filter(pk=instance.email_id).values_list("owner_id", flat=True)[0]
    ids = {"draft_id": instance.id, "email_id": instance.email_id}
    if created:
        publish_event(
            user_id=owner_id,
            event_type=EventType.DRAFT_READY,
            data={**ids, "requires_approval": instance.requires_approval},
        )
    if not status_changed:
        return
    if event_type == EventType.DRAFT_REJECTED:
        ids["reason"] = instance.rejection_reason or None
    publish_event(user_id=owner_id, event_type=event_type, data=ids)


def batch_job_saved(sender, instance: BatchJob, created, raw=False, update_fields=None, **kwargs):
    if raw or instance.status not in BATCH_FINAL_STATUSES:
        return
    if _changed(instance, "status", created, update_fields):
        publish_event(
            user_id=instance.owner_id,
            event_type=EventType.BATCH_COMPLETE,
            data={
                "job_id": instance.id,
                "status": instance.status,
                "succeeded": instance.succeeded,
                "failed": instance.failed,
            },
        )


def connect() -> None:
    """Called from EmailsConfig.ready()."""
    for model in TRACKED:
        pre_save.connect(remember_stored_values, sender=model, dispatch_uid=f"emails.pre.{model}")
    post_save.connect(email_saved, sender=Email, dispatch_uid="emails.email_saved")
    post_save.connect(draft_saved, sender=Draft, dispatch_uid="emails.draft_saved")
    post_save.connect(batch_job_saved, sender=BatchJob, dispatch_uid="emails.batch_job_saved")
