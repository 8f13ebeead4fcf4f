"""Background tasks (Django's tasks API, `django-tasks` backport): they only call a service."""

import uuid

from django_tasks import task


@task()
def batch_job_run_task(job_id: str) -> None:
    """Run one BatchJob; enqueued by services.batch_job_start after the job row commits."""
    # Imported here because services enqueues this task: the modules import each other.
    from emails.services import batch_job_run

    batch_job_run(job_id=uuid.UUID(job_id))
