"""The production task path: a batch job enqueued on the django-tasks-db backend stays queued
until `manage.py db_worker` runs it, then publishes like the embedded immediate backend."""

import pytest
from django.core.management import call_command

from emails import services
from emails.models import BatchJob, BatchKind, BatchStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_database_queued_job_runs_in_the_worker(user, settings, events):
    from django_tasks_db.models import DBTaskResult

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    settings.EMAILS_BATCH_PROGRESS_INTERVAL = 60  # first and final item only, however slow

    job = services.batch_job_start(user=user, kind=BatchKind.SYNC)

    assert BatchJob.objects.get(pk=job.pk).status == BatchStatus.QUEUED
    assert DBTaskResult.objects.get().args_kwargs == {"args": [str(job.id)], "kwargs": {}}
    assert events(user) == []

    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)

    job = BatchJob.objects.get(pk=job.pk)
    assert (job.status, job.total, job.succeeded) == (BatchStatus.COMPLETED, 3, 3)
    assert [t for t, _ in events(user)] == [
        "email_received",
        "batch_progress",
        "email_received",
        "email_received",
        "batch_progress",
        "batch_complete",
    ]
