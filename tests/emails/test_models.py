"""The email models' choices against the event catalogue: every classification an email can
get and every status a batch can end in is one that the event it causes accepts, and the
catalogue accepts nothing the models cannot hold."""

from emails.models import BATCH_FINAL_STATUSES, BatchStatus, Classification
from notifications import events

# The statuses of a job that has not ended; batch_complete never carries them.
IN_PROGRESS = {BatchStatus.QUEUED, BatchStatus.RUNNING}


def test_the_classifications_are_the_catalogues():
    models_only = set(Classification.values) - set(events.CLASSIFICATIONS)
    catalogue_only = set(events.CLASSIFICATIONS) - set(Classification.values)
    assert (models_only, catalogue_only) == (set(), set())


def test_every_batch_status_is_in_progress_or_a_final_status_of_the_catalogue():
    # A status added to BatchStatus fails here until it is named in progress above or final in
    # the catalogue (which batch_complete accepts); one added to the catalogue fails too.
    finished = set(BatchStatus.values) - IN_PROGRESS
    assert finished == set(events.BATCH_FINAL_STATUSES)
    assert set(BATCH_FINAL_STATUSES) == finished
    assert all(isinstance(status, BatchStatus) for status in BATCH_FINAL_STATUSES)


def test_each_choice_builds_the_event_it_is_published_in():
    email_id = "1d1c3f51-0b7d-4f63-a1b0-5d3f0b1e7c22"
    for classification in Classification:
        data = {"email_id": email_id, "classification": classification, "confidence": 0.5}
        payload = events.build_payload(events.EventType.EMAIL_CLASSIFIED, data)
        assert payload["classification"] == classification.value
    for status in BATCH_FINAL_STATUSES:
        data = {"job_id": email_id, "status": status, "succeeded": 1, "failed": 0}
        assert events.build_payload(events.EventType.BATCH_COMPLETE, data)["status"] == status
