"""Background tasks (Django's tasks API, `django-tasks` backport): they only call a service."""

import uuid

from django_tasks import task

from emails.services import batch_job_run


@task()
def batch_job_run_task(job_id: str) -> None:
    """Run one BatchJob; services.batch_job_start enqueues it (by name) once the row commits."""
    batch_job_run(job_id=uuid.UUID(job_id))
