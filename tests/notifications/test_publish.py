"""publish_event(): payload validation, gapless per-user numbering, delivery only after commit,
and a channel layer that is down costing nothing but live delivery."""

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection, transaction
from rest_framework.test import APIClient

from notifications.delivery import flush_deliveries
from notifications.events import EventPayloadError, EventType, sample_data
from notifications.models import Event
from notifications.publish import publish_event
from tests.conftest import access_token_for, redis_layer_config
from tests.support.redis import RedisServer
from tests.support.ws import connect, receive_events


def draft_ready(user, **overrides):
    return publish_event(
        user_id=user.id,
        event_type=EventType.DRAFT_READY,
        data={**sample_data(EventType.DRAFT_READY), **overrides},
    )


# --- the catalogue at the call site ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("event_type", "data", "message"),
    [
        ("email_received", {"email_id": str(uuid.uuid4()), "subject": "Hi"}, "missing keys"),
        (
            "draft_approved",
            {"draft_id": str(uuid.uuid4()), "email_id": str(uuid.uuid4()), "extra": 1},
            "unexpected keys",
        ),
        ("email_sent", {"email_id": "nope", "draft_id": str(uuid.uuid4())}, "email_sent.email_id"),
        (
            "email_classified",
            {"email_id": str(uuid.uuid4()), "classification": "urgent", "confidence": 0.5},
            "classification",
        ),
        (
            "email_classified",
            {"email_id": str(uuid.uuid4()), "classification": "spam", "confidence": 1.5},
            "confidence",
        ),
        (
            "draft_ready",
            {"draft_id": str(uuid.uuid4()), "email_id": str(uuid.uuid4()), "requires_approval": 1},
            "requires_approval",
        ),
        (
            "batch_progress",
            {"job_id": str(uuid.uuid4()), "processed": -1, "total": 3, "percentage": 0},
            "processed",
        ),
        (
            "batch_complete",
            {"job_id": str(uuid.uuid4()), "status": "running", "succeeded": 1, "failed": 0},
            "status",
        ),
        ("email_deleted", {}, "unknown event type"),
    ],
)
def test_a_payload_that_breaks_the_catalogue_raises_and_stores_nothing(
    user, event_type, data, message
):
    with pytest.raises(EventPayloadError, match=message):
        publish_event(user_id=user.id, event_type=event_type, data=data)
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_uuids_become_strings_and_the_timestamp_is_utc_iso(user):
    email_id, draft_id = uuid.uuid4(), uuid.uuid4()
    event = publish_event(
        user_id=str(user.id),
        event_type="email_sent",
        data={"email_id": email_id, "draft_id": draft_id},
    )
    envelope = Event.objects.get(pk=event.pk).envelope()
    assert envelope["data"] == {"email_id": str(email_id), "draft_id": str(draft_id)}
    assert envelope["user_id"] == str(user.id)
    assert envelope["timestamp"].endswith("+00:00")
    assert datetime.fromisoformat(envelope["timestamp"]).tzinfo == UTC


@pytest.mark.django_db
def test_every_event_type_has_a_valid_sample():
    for event_type in EventType:
        assert sample_data(event_type)


# --- numbering ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ids_count_per_user_from_one(user, other_user):
    ids = [draft_ready(user).event_id for _ in range(3)]
    other = [draft_ready(other_user).event_id for _ in range(2)]
    assert ids == [1, 2, 3]
    assert other == [1, 2]


@pytest.mark.django_db
def test_a_rolled_back_event_returns_its_id(user):
    draft_ready(user)
    with contextlib.suppress(RuntimeError), transaction.atomic():
        draft_ready(user)
        raise RuntimeError("the caller's write failed")
    assert draft_ready(user).event_id == 2


@pytest.mark.django_db(transaction=True)
def test_ids_stay_gapless_and_commit_ordered_under_eight_threads(user):
    per_thread, rollback_every = 25, 4
    errors: list[BaseException] = []
    committed: list[int] = []
    barrier = threading.Barrier(8)

    def worker(index):
        try:
            barrier.wait()
            for n in range(per_thread):
                try:
                    with transaction.atomic():
                        draft_ready(user)
                        if n % rollback_every == index % rollback_every:
                            raise RuntimeError("roll this one back")
                except RuntimeError:
                    continue
                committed.append(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert 0 < len(committed) < 8 * per_thread
    stored = list(Event.objects.filter(user=user).order_by("event_id"))
    assert [e.event_id for e in stored] == list(range(1, len(committed) + 1))
    by_time = sorted(stored, key=lambda e: (e.created_at, e.event_id))
    assert [e.event_id for e in by_time] == [e.event_id for e in stored]


# --- delivery after commit ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_kind")
async def test_an_event_is_delivered_only_after_its_transaction_commits(user):
    comm, _ = await connect(access_token_for(user))

    def write():
        with transaction.atomic():
            draft_ready(user)
            assert async_to_sync(comm.receive_nothing)(0.3), "delivered before commit"

    await sync_to_async(write)()
    [received] = await receive_events(comm, 1)
    assert received["id"] == 1
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_kind")
async def test_an_event_of_a_rolled_back_transaction_is_never_delivered(user):
    comm, _ = await connect(access_token_for(user))

    def write_and_fail():
        with contextlib.suppress(RuntimeError), transaction.atomic():
            draft_ready(user)
            raise RuntimeError("rollback")

    await sync_to_async(write_and_fail)()
    assert await comm.receive_nothing(timeout=0.5)
    assert not await sync_to_async(Event.objects.exists)()
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_publishing_from_a_plain_thread_reaches_sockets_through_redis(user, redis_layer):
    comm, _ = await connect(access_token_for(user))

    def from_a_worker_thread():
        # No ASGI loop here (like a task worker or a management command).
        for _ in range(3):
            draft_ready(user)
        assert flush_deliveries(timeout=10)
        connection.close()

    thread = threading.Thread(target=from_a_worker_thread)
    thread.start()
    await sync_to_async(thread.join)(30)
    assert [e["id"] for e in await receive_events(comm, 3)] == [1, 2, 3]
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_request_succeeds_while_redis_is_down_and_the_event_is_replayed_later(
    staff_user, user, settings
):
    redis_server = RedisServer().start()
    try:
        settings.CHANNEL_LAYERS = redis_layer_config(redis_server.url)
        comm, _ = await connect(access_token_for(user))
        redis_server.stop()

        client = APIClient()
        client.force_authenticate(staff_user)

        def post_test_event():
            started = time.monotonic()
            response = client.post(
                "/api/v1/notifications/test",
                {"user": str(user.id), "type": "email_received"},
                format="json",
            )
            return response, time.monotonic() - started

        response, elapsed = await sync_to_async(post_test_event)()
        assert response.status_code == 201, response.content
        assert elapsed < 2
        with contextlib.suppress(Exception):
            await comm.disconnect()

        redis_server.start()
        resumed, connected = await connect(access_token_for(user), last_event_id=0)
        assert connected["recovered"] is True
        [replayed] = await receive_events(resumed, 1)
        assert replayed == response.json()["event"]
        await resumed.disconnect()
    finally:
        redis_server.stop()
