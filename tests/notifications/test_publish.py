"""publish_event(): payload validation, gapless per-user numbering, delivery only after commit,
and a channel layer that is down costing nothing but live delivery."""

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.utils import load_backend
from rest_framework.test import APIClient

from notifications.delivery import flush_deliveries
from notifications.events import EventPayloadError, EventType, sample_data
from notifications.models import Event, EventCounter
from notifications.publish import apublish_event, publish_event
from reasonflow.users.models import User
from tests.conftest import access_token_for, pubsub_layer_config, redis_layer_config
from tests.support.live import ROOT
from tests.support.redis import RedisServer
from tests.support.shared_db import live_database_url
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
def test_uuid_strings_in_any_form_uuid_takes_are_stored_in_its_canonical_form(user):
    email_id, draft_id = uuid.uuid4(), uuid.uuid4()
    event = publish_event(
        user_id=user.id,
        event_type="email_sent",
        data={"email_id": str(email_id).upper(), "draft_id": "{" + draft_id.hex + "}"},
    )
    assert event.data == {"email_id": str(email_id), "draft_id": str(draft_id)}
    with pytest.raises(EventPayloadError, match="email_id"):
        publish_event(
            user_id=user.id,
            event_type="email_sent",
            data={"email_id": str(email_id) + "0", "draft_id": str(draft_id)},
        )
    with pytest.raises(EventPayloadError, match="unknown event type"):
        publish_event(user_id=user.id, event_type=["email_sent"], data={})


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
@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_publishing_from_a_plain_thread_reaches_sockets_through_redis(
    user, settings, redis_url, kind
):
    # The pub/sub layer sends from the sender thread with redis-py's blocking client; the core
    # layer on an event loop that thread keeps.
    make_config = pubsub_layer_config if kind == "pubsub" else redis_layer_config
    settings.CHANNEL_LAYERS = make_config(redis_url)
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
def test_a_delivery_that_fails_is_logged_and_the_producers_commit_stands(user, settings, caplog):
    # A channel layer that cannot even be built: the hook raises after the commit.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "notifications.no_such.Layer"}}
    with caplog.at_level(logging.ERROR, logger="django.db.backends.base"), transaction.atomic():
        draft_ready(user)
    assert [e.event_id for e in Event.objects.filter(user=user)] == [1]
    [record] = [r for r in caplog.records if "on_commit" in r.getMessage()]
    assert "publish_event delivery" in record.getMessage()


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


# --- allocation at commit: savepoints, rollbacks, autocommit -----------------------------------


def email_received(user, subject):
    return publish_event(
        user_id=user.id,
        event_type=EventType.EMAIL_RECEIVED,
        data={"email_id": uuid.uuid4(), "subject": subject, "sender": "a@example.com"},
    )


def stored_subjects(user) -> list[tuple[int, str]]:
    return [
        (event.event_id, event.data["subject"])
        for event in Event.objects.filter(user=user).order_by("event_id")
    ]


async def received_subjects(comm, count) -> list[tuple[int, str]]:
    return [(e["id"], e["data"]["subject"]) for e in await receive_events(comm, count)]


@pytest.mark.django_db(transaction=True)
async def test_a_rolled_back_savepoint_drops_its_events_and_keeps_the_outer_ones(user, other_user):
    comm, _ = await connect(access_token_for(user))

    def write():
        with transaction.atomic():
            email_received(user, "before")
            with contextlib.suppress(RuntimeError), transaction.atomic():
                dropped = [email_received(user, "dropped"), email_received(other_user, "dropped")]
                raise RuntimeError("the savepoint's write failed")
            email_received(user, "after")
        return dropped

    dropped = await sync_to_async(write)()
    assert await received_subjects(comm, 2) == [(1, "before"), (2, "after")]
    assert await comm.receive_nothing(timeout=0.3)
    assert await sync_to_async(stored_subjects)(user) == [(1, "before"), (2, "after")]
    assert await sync_to_async(stored_subjects)(other_user) == []
    assert [event.event_id for event in dropped] == [None, None]
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
def test_set_rollback_on_a_savepoint_drops_its_events_only(user):
    with transaction.atomic():
        email_received(user, "kept")
        with transaction.atomic():
            email_received(user, "dropped")
            transaction.set_rollback(True)
        kept = email_received(user, "kept too")
    assert stored_subjects(user) == [(1, "kept"), (2, "kept too")]
    assert kept.event_id == 2


@pytest.mark.django_db(transaction=True)
def test_set_rollback_on_the_transaction_stores_nothing_and_returns_the_ids(user):
    with transaction.atomic():
        email_received(user, "dropped")
        transaction.set_rollback(True)
    assert stored_subjects(user) == []
    assert email_received(user, "next").event_id == 1


@pytest.mark.django_db(transaction=True)
def test_an_exception_inside_atomic_stores_nothing_and_counts_nothing(user, other_user):
    with pytest.raises(RuntimeError), transaction.atomic():
        email_received(user, "dropped")
        email_received(other_user, "dropped")
        raise RuntimeError("the caller's write failed")
    assert not Event.objects.exists()
    assert not EventCounter.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_in_autocommit_mode_the_event_is_stored_and_numbered_at_once(user):
    comm, _ = await connect(access_token_for(user))
    event = await sync_to_async(email_received)(user, "now")
    assert (event.event_id, event.pk is not None, event.created_at is not None) == (1, True, True)
    assert await sync_to_async(stored_subjects)(user) == [(1, "now")]
    assert await received_subjects(comm, 1) == [(1, "now")]
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
def test_nested_blocks_number_at_the_outermost_commit_in_publish_order(user):
    with transaction.atomic():
        first = email_received(user, "first")
        with transaction.atomic():
            second = email_received(user, "second")
            with transaction.atomic(savepoint=False):
                third = email_received(user, "third")
        assert (first.event_id, second.event_id, third.event_id) == (None, None, None)
        assert stored_subjects(user) == []
    assert [first.event_id, second.event_id, third.event_id] == [1, 2, 3]
    assert stored_subjects(user) == [(1, "first"), (2, "second"), (3, "third")]
    assert Event.objects.get(pk=third.pk).created_at == third.created_at


@pytest.mark.django_db(transaction=True)
async def test_delivery_after_commit_carries_each_users_ids_in_publish_order(user, other_user):
    comm, _ = await connect(access_token_for(user))
    other, _ = await connect(access_token_for(other_user))
    seen_by_the_callers_hook = []

    def write():
        with transaction.atomic():
            events = [email_received(u, s) for u, s in [(other_user, "o1"), (user, "u1")]]
            events += [email_received(u, s) for u, s in [(user, "u2"), (other_user, "o2")]]
            # The caller's own hooks run after the events were numbered.
            transaction.on_commit(
                lambda: seen_by_the_callers_hook.extend(e.event_id for e in events)
            )

    await sync_to_async(write)()
    assert await received_subjects(comm, 2) == [(1, "u1"), (2, "u2")]
    assert await received_subjects(other, 2) == [(1, "o1"), (2, "o2")]
    assert seen_by_the_callers_hook == [1, 1, 2, 2]
    await comm.disconnect()
    await other.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_apublish_event_stores_and_delivers_from_async_code(user):
    comm, _ = await connect(access_token_for(user))
    event = await apublish_event(
        user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready")
    )
    assert event.event_id == 1
    [received] = await receive_events(comm, 1)
    assert received == await sync_to_async(lambda: Event.objects.get(pk=event.pk).envelope())()
    await comm.disconnect()


@pytest.mark.django_db
def test_under_a_test_case_a_block_of_the_tests_own_stores_its_events_when_it_exits(user):
    # pytest-django wraps this test in blocks that never commit; the test's own outermost
    # block is where the commit would be.
    with transaction.atomic():
        inside = email_received(user, "inside")
        with contextlib.suppress(RuntimeError), transaction.atomic():
            email_received(user, "dropped")
            raise RuntimeError("rollback")
        assert inside.event_id is None
    assert inside.event_id == 1
    assert email_received(user, "outside").event_id == 2
    assert stored_subjects(user) == [(1, "inside"), (2, "outside")]


def test_a_plain_django_backend_is_refused_loudly():
    plain_engine = f"django.db.backends.{connection.vendor}".replace("sqlite", "sqlite3")
    plain = load_backend(plain_engine).DatabaseWrapper(connection.settings_dict, DEFAULT_DB_ALIAS)
    project = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = plain
    try:
        with pytest.raises(ImproperlyConfigured, match="needs one of the project"):
            publish_event(
                user_id=uuid.uuid4(), event_type="draft_ready", data=sample_data("draft_ready")
            )
    finally:
        connections[DEFAULT_DB_ALIAS] = project


# --- load: producers publishing to overlapping users in random order ---------------------------

PRODUCERS, LOAD_SECONDS, LOAD_USERS = 3, 60, 50


@pytest.mark.load
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_producers_publishing_to_overlapping_users_in_any_order_never_deadlock():
    if connection.vendor != "postgresql":
        pytest.skip("row-lock deadlocks: PostgreSQL only")
    users = [
        User.objects.create_user(email=f"load-{n}@example.com", password=None)
        for n in range(LOAD_USERS)
    ]
    env = {**os.environ, "DATABASE_URL": live_database_url(), "REDIS_URL": ""}
    command = [sys.executable, "-m", "tests.support.producers", "--seconds", str(LOAD_SECONDS)]
    command += ["--users", ",".join(str(user.id) for user in users)]
    producers = [
        subprocess.Popen(
            [*command, "--seed", str(seed)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for seed in range(PRODUCERS)
    ]
    results = [
        json.loads(producer.communicate(timeout=LOAD_SECONDS + 60)[0]) for producer in producers
    ]

    assert [(r["deadlocks"], r["errors"]) for r in results] == [(0, {})] * PRODUCERS
    published: dict[str, int] = {}
    for result in results:
        last_seen: dict[str, int] = {}
        for transaction_ids in result["committed"]:
            for user_id, event_id in transaction_ids:
                published[user_id] = published.get(user_id, 0) + 1
                # A producer's later commits get a user's later ids.
                assert event_id > last_seen.get(user_id, 0)
                last_seen[user_id] = event_id
    assert sum(len(r["committed"]) for r in results) > 100  # the load really ran
    for user in users:
        stored = list(Event.objects.filter(user=user).order_by("event_id"))
        assert [e.event_id for e in stored] == list(range(1, published.get(str(user.id), 0) + 1))
        times = [e.created_at for e in stored]
        assert times == sorted(times)  # numbered in commit order


@pytest.mark.django_db(transaction=True)
def test_a_published_events_time_is_the_stored_one_to_the_microsecond(user, other_user):
    with transaction.atomic():  # one event: the single-event statement
        alone = email_received(user, "alone")
    with transaction.atomic():  # two users: the batch statement
        first = email_received(user, "first")
        second = email_received(other_user, "second")
    for event in (alone, first, second):
        stored = Event.objects.get(pk=event.pk)
        assert event.created_at == stored.created_at
        assert event.created_at.utcoffset() == timedelta(0)
        assert json.loads(event.envelope_json())["timestamp"] == stored.envelope()["timestamp"]


# --- the store statement carries the COMMIT (PostgreSQL) ------------------------------------


@contextlib.contextmanager
def _statements_sent(path):
    """The statements (simple or extended protocol) libpq sends meanwhile, read from its
    trace of the connection."""
    from psycopg.pq import Trace

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    sent: list[str] = []
    with open(path, "w") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            yield sent
        finally:
            pgconn.untrace()
    for line in path.read_text().splitlines():
        words = line.split("\t")
        # F <length> Query "<statement>", or F <length> Parse "<name>" "<statement>" ...
        if words[0] == "F" and len(words) > 3 and words[2] in ("Query", "Parse"):
            sent.append(words[3].strip().removeprefix('"" '))


DRAFT_READY = sample_data("draft_ready")


def _only_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores the events in statements of their own")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("events", [1, 3])
def test_a_publishing_transaction_commits_in_its_store_statement(
    user, other_user, events, tmp_path
):
    _only_postgresql()
    with _statements_sent(tmp_path / "trace") as sent, transaction.atomic():
        User.objects.filter(pk=user.pk).update(full_name="Writes first")
        for index in range(events):
            target = (user, other_user)[index % 2]
            publish_event(
                user_id=target.id, event_type="draft_ready", data=sample_data("draft_ready")
            )
    # BEGIN, the caller's write, then one statement that stores and commits: no COMMIT alone.
    assert len(sent) == 3, sent
    assert sent[0] == '"BEGIN"' and sent[1].startswith('"UPDATE')
    assert "notifications_event" in sent[2] and sent[2].endswith('; COMMIT"')
    assert connection.connection.info.transaction_status.name == "IDLE"
    assert Event.objects.filter(user__in=[user, other_user]).count() == events
    assert User.objects.get(pk=user.pk).full_name == "Writes first"


@pytest.mark.django_db(transaction=True)
def test_a_receipt_written_after_the_events_commits_on_its_own(user, tmp_path):
    # The publish API's receipt is written once its events are stored: the store statement
    # is not the last before the commit, so it does not commit.
    from notifications import services
    from notifications.models import PublishReceipt

    _only_postgresql()
    key, _ = services.service_key_create(name="receipts")
    item = services.PublishItem(user.id, "draft_ready", sample_data("draft_ready"))
    with _statements_sent(tmp_path / "trace") as sent:
        services.events_publish_for_service(
            key=key, items=[item], idempotency_key="once", body_hash="h"
        )
    assert sent[-1] == '"COMMIT"', sent
    assert not any(statement.endswith('; COMMIT"') for statement in sent)
    receipt = PublishReceipt.objects.get(service_key=key)
    assert json.loads(receipt.response)["events"][0]["id"] == 1


_FAIL = (
    "CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("when", ["storing", "committing"])
def test_a_store_or_commit_that_fails_rolls_everything_back_and_raises(user, when):
    from django.db import DatabaseError

    _only_postgresql()
    trigger = (
        "CREATE TRIGGER refuse BEFORE INSERT ON notifications_event "
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse()"
        if when == "storing"
        # A deferred constraint trigger fails at COMMIT, after the insert succeeded.
        else "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON notifications_event "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse()"
    )
    with connection.cursor() as cursor:
        cursor.execute(_FAIL)
        cursor.execute(trigger)
    try:
        with pytest.raises(DatabaseError, match="refused by the test"), transaction.atomic():
            User.objects.filter(pk=user.pk).update(full_name="Rolled back")
            publish_event(
                user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready")
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse ON notifications_event")
    # Nothing of the transaction stands, and the connection serves the next one.
    assert User.objects.get(pk=user.pk).full_name != "Rolled back"
    assert not Event.objects.filter(user=user).exists()
    assert not EventCounter.objects.filter(user=user, last_event_id__gt=0).exists()
    publish_event(user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready"))
    assert Event.objects.get(user=user).event_id == 1
