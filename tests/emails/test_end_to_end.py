"""End to end through the WebSocket on reasonflow.asgi.application: REST calls made from the
test's loop (sync_to_async) reach the socket as the 8 event types, on both channel layers."""

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from rest_framework.test import APIClient

from tests.conftest import access_token_for
from tests.support.ws import connect, receive_events

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_kind"),
]


def rest(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")

    def request(method: str, path: str, body):
        try:
            return getattr(client, method)(path, body, format="json")
        finally:
            # The worker thread outlives the test: its connection must not block DB teardown.
            connections.close_all()

    async def call(method: str, path: str, body=None):
        response = await sync_to_async(request)(method, path, body)
        return response.status_code, response.json()

    return call


async def test_sync_process_approve_and_reject_arrive_on_the_socket(user, other_user):
    comm, _ = await connect(access_token_for(user))
    other, _ = await connect(access_token_for(other_user))
    call = rest(user)

    status, body = await call("post", "/api/v1/emails/sync")
    assert status == 200
    received = await receive_events(comm, 3)
    assert [e["type"] for e in received] == ["email_received"] * 3
    assert [e["data"]["email_id"] for e in received] == [e["id"] for e in body["emails"]]
    assert received[0]["data"] == {
        "email_id": body["emails"][0]["id"],
        "subject": "Question about enterprise pricing",
        "sender": "John Doe <john.doe@acme-corp.com>",
    }
    first, second = body["emails"][0]["id"], body["emails"][1]["id"]

    status, processed = await call("post", f"/api/v1/emails/{first}/process")
    assert status == 200
    draft_id = processed["draft"]["id"]
    classified, ready = await receive_events(comm, 2)
    assert classified["data"] == {
        "email_id": first,
        "classification": "inquiry",
        "confidence": processed["confidence"],
    }
    assert ready["data"] == {"draft_id": draft_id, "email_id": first, "requires_approval": False}

    status, approved = await call("post", f"/api/v1/drafts/{draft_id}/approve")
    assert (status, approved["status"]) == (200, "sent")
    events = await receive_events(comm, 2)
    assert [(e["type"], e["data"]) for e in events] == [
        ("draft_approved", {"draft_id": draft_id, "email_id": first}),
        ("email_sent", {"email_id": first, "draft_id": draft_id}),
    ]

    status, processed = await call("post", f"/api/v1/emails/{second}/process")
    second_draft = processed["draft"]["id"]
    await receive_events(comm, 2)
    status, _ = await call("post", f"/api/v1/drafts/{second_draft}/reject", {"reason": "Later"})
    [rejected] = await receive_events(comm, 1)
    assert rejected["type"] == "draft_rejected"
    assert rejected["data"] == {"draft_id": second_draft, "email_id": second, "reason": "Later"}
    assert rejected["id"] == 10 and rejected["user_id"] == str(user.id)
    assert rejected["timestamp"].endswith("+00:00")

    assert await other.receive_nothing(timeout=0.2)
    await comm.disconnect()
    await other.disconnect()


async def test_a_batch_job_reports_progress_then_completion(user, settings):
    settings.EMAILS_BATCH_PROGRESS_INTERVAL = 0
    settings.EMAILS_DEMO_PER_SYNC = 4
    comm, _ = await connect(access_token_for(user))
    call = rest(user)
    status, _ = await call("post", "/api/v1/emails/sync")
    await receive_events(comm, 4)
    status, listing = await call("get", "/api/v1/emails/")
    ids = [email["id"] for email in listing["results"]]

    status, started = await call("post", "/api/v1/emails/batch/process", {"email_ids": ids})
    assert status == 202
    assert started == {"job_id": started["job_id"], "status": "queued", "total": 4, "processed": 0}

    frames = await receive_events(comm, 4 * 2 + 4 + 1)
    progress = [e["data"] for e in frames if e["type"] == "batch_progress"]
    assert progress == [
        {"job_id": started["job_id"], "processed": n, "total": 4, "percentage": n * 25}
        for n in range(1, 5)
    ]
    assert frames[-1]["type"] == "batch_complete"
    assert frames[-1]["data"] == {
        "job_id": started["job_id"],
        "status": "completed",
        "succeeded": 4,
        "failed": 0,
    }
    assert [e["id"] for e in frames] == list(range(5, 18))
    status, job = await call("get", f"/api/v1/emails/batch/{started['job_id']}")
    assert (job["status"], job["percentage"]) == ("completed", 100)
    await comm.disconnect()
