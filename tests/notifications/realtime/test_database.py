"""The connect path's database visit: notifications.realtime.database.BatchedRead, which serves
the sockets that connect at once with one query, and the selector it runs."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError, connection

from notifications.events import EventType, sample_data
from notifications.models import Event
from notifications.publish import publish_event
from notifications.realtime import selectors
from notifications.realtime.database import BatchedRead, read_from_database
from notifications.realtime.selectors import ResumePoint
from notifications.selectors import event_list_for_user
from tests.conftest import access_token_for
from tests.support.read_threads import close_read_thread_connections
from tests.support.ws import connect


def publish(user, count: int) -> None:
    for _ in range(count):
        publish_event(
            user_id=user.id,
            event_type=EventType.EMAIL_RECEIVED,
            data=sample_data(EventType.EMAIL_RECEIVED),
        )


class RecordingRead:
    """The real selector, recording the keys of each database visit; `hold` keeps the first
    visit waiting until released, so that reads can queue behind it."""

    def __init__(self, *, hold: bool = False) -> None:
        self.visits: list[set] = []
        self.visiting = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, keys):
        self.visits.append(set(keys))
        self.visiting.set()
        self.release.wait(10)
        return selectors.connecting_users_with_resume_points(requests=keys)


# --- the selector ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_query_reads_every_connecting_user_and_their_newest_event(
    make_user, django_assert_num_queries
):
    users = [make_user() for _ in range(3)]
    publish(users[0], 2)
    publish(users[1], 1)
    missing = make_user()
    missing_id = missing.id
    missing.delete()
    requests = [(user.id, None) for user in users] + [(missing_id, None)]
    with django_assert_num_queries(1):
        found = selectors.connecting_users_with_resume_points(requests=requests)
    assert {key: (user and user.id, resume) for key, (user, resume) in found.items()} == {
        (users[0].id, None): (users[0].id, ResumePoint(last_event_id=2, recovered=True)),
        (users[1].id, None): (users[1].id, ResumePoint(last_event_id=1, recovered=True)),
        (users[2].id, None): (users[2].id, ResumePoint(last_event_id=0, recovered=True)),
        (missing_id, None): (None, ResumePoint(last_event_id=0, recovered=True)),
    }


@pytest.mark.django_db
def test_the_user_carries_exactly_the_fields_the_token_policy_reads(user):
    found, _ = selectors.connecting_users_with_resume_points(requests=[(user.id, None)])[
        (user.id, None)
    ]
    assert (found.id, found.is_active, found.password, found.token_version) == (
        user.id,
        True,
        user.password,
        user.token_version,
    )


@pytest.mark.django_db
def test_token_states_are_typed_as_the_orm_types_them(make_user, django_assert_num_queries):
    import uuid

    from notifications.realtime.selectors import UserTokenState

    active, inactive = make_user(), make_user(is_active=False)
    publish(active, 3)
    with django_assert_num_queries(1):
        states = selectors.users_token_states_with_last_event_ids(
            user_ids=[active.id, inactive.id, uuid.uuid4()]
        )
    assert states == {
        active.id: (UserTokenState(active.id, True, active.password, active.token_version), 3),
        inactive.id: (
            UserTokenState(inactive.id, False, inactive.password, inactive.token_version),
            0,
        ),
    }
    for state, _ in states.values():
        assert type(state.id) is uuid.UUID and type(state.is_active) is bool
        assert type(state.token_version) is int


@pytest.mark.django_db
def test_resume_points_of_clients_at_every_position(make_user, django_assert_num_queries):
    user = make_user()
    publish(user, 5)
    Event.objects.filter(user=user, event_id__lte=2).delete()  # pruned: 1 and 2
    requests = [(user.id, last) for last in (None, 5, 4, 2, 1, 9)]
    with django_assert_num_queries(2):  # the second for those resuming from an older id
        found = selectors.connecting_users_with_resume_points(requests=requests)
    assert {last: resume for (_, last), (_, resume) in found.items()} == {
        None: ResumePoint(5, True),
        5: ResumePoint(5, True),  # up to date
        4: ResumePoint(5, True),  # 5 is kept
        2: ResumePoint(5, True),  # 3 is kept
        1: ResumePoint(5, False),  # 2 was pruned
        9: ResumePoint(5, False),  # an id this store never issued
    }


# --- the batching ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_reads_that_arrive_together_share_one_visit(make_user):
    users = [await sync_to_async(make_user)() for _ in range(8)]
    read = RecordingRead()
    batched = BatchedRead(read)
    found = await asyncio.gather(*(batched((user.id, None)) for user in users))
    assert read.visits == [{(user.id, None) for user in users}]
    assert [user.id for user, _ in found] == [user.id for user in users]


@pytest.mark.django_db(transaction=True)
async def test_reads_that_arrive_during_a_visit_share_the_next(make_user):
    users = [await sync_to_async(make_user)() for _ in range(6)]
    read = RecordingRead(hold=True)
    batched = BatchedRead(read)
    first = asyncio.ensure_future(batched((users[0].id, None)))
    await asyncio.to_thread(read.visiting.wait, 5)
    later = [asyncio.ensure_future(batched((user.id, None))) for user in users[1:]]
    again = asyncio.ensure_future(batched((users[1].id, None)))  # a second socket, same key
    await asyncio.sleep(0.05)
    read.release.set()
    found = await asyncio.gather(first, *later, again)
    assert read.visits == [{(users[0].id, None)}, {(user.id, None) for user in users[1:]}]
    assert [user.id for user, _ in found] == [user.id for user in users] + [users[1].id]


@pytest.mark.django_db(transaction=True)
async def test_under_load_the_next_visit_waits_its_window_for_more_readers(make_user):
    users = [await sync_to_async(make_user)() for _ in range(3)]
    read = RecordingRead(hold=True)
    batched = BatchedRead(read, window=lambda: 0.5)
    first = asyncio.ensure_future(batched((users[0].id, None)))
    await asyncio.to_thread(read.visiting.wait, 5)
    queued = asyncio.ensure_future(batched((users[1].id, None)))  # arrives during the visit
    await asyncio.sleep(0)
    read.release.set()
    await first
    # The visit that `queued` waits for has not gone yet: a reader arriving within the window
    # shares it.
    joined = asyncio.ensure_future(batched((users[2].id, None)))
    await asyncio.gather(queued, joined)
    assert read.visits == [{(users[0].id, None)}, {(users[1].id, None), (users[2].id, None)}]


@pytest.mark.django_db(transaction=True)
async def test_a_lone_read_does_not_wait_for_the_window(user):
    read = RecordingRead()
    batched = BatchedRead(read, window=lambda: 30)
    for _ in range(2):  # each read finds no visit under way
        found, _ = await asyncio.wait_for(batched((user.id, None)), 5)
        assert found.id == user.id
    assert read.visits == [{(user.id, None)}] * 2


@pytest.mark.django_db(transaction=True)
async def test_a_visit_takes_at_most_limit_keys(make_user):
    users = [await sync_to_async(make_user)() for _ in range(7)]
    read = RecordingRead()
    batched = BatchedRead(read, limit=3)
    await asyncio.gather(*(batched((user.id, None)) for user in users))
    assert [len(visit) for visit in read.visits] == [3, 3, 1]


@pytest.mark.django_db(transaction=True)
async def test_a_failed_visit_fails_its_readers_and_the_next_visit_reads_again(user):
    failures = [OperationalError("database is down"), OperationalError("still down")]

    def read(keys):
        if failures:
            raise failures.pop(0)  # read_from_database retries a read once
        return selectors.connecting_users_with_resume_points(requests=keys)

    batched = BatchedRead(read)
    outcomes = await asyncio.gather(
        batched((user.id, None)), batched((user.id, 3)), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [OperationalError, OperationalError]
    found, resume = await batched((user.id, None))
    assert (found.id, resume) == (user.id, ResumePoint(0, True))


async def test_a_read_that_misses_a_key_fails_that_batch_not_the_next():
    answers = iter([{"a": 1}, {"c": 3}])  # the first visit forgets "b"
    batched = BatchedRead(lambda keys: next(answers))
    outcomes = await asyncio.gather(batched("a"), batched("b"), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [KeyError, KeyError]
    assert await batched("c") == 3


@pytest.mark.django_db(transaction=True)
async def test_a_reader_that_goes_away_does_not_disturb_the_others(make_user):
    users = [await sync_to_async(make_user)() for _ in range(3)]
    read = RecordingRead(hold=True)
    batched = BatchedRead(read)
    readers = [asyncio.ensure_future(batched((user.id, None))) for user in users]
    await asyncio.to_thread(read.visiting.wait, 5)
    readers[1].cancel()
    read.release.set()
    first, gone, last = await asyncio.gather(*readers, return_exceptions=True)
    assert isinstance(gone, asyncio.CancelledError)
    assert (first[0].id, last[0].id) == (users[0].id, users[2].id)


def test_each_event_loop_gets_its_own_visits():
    # A reader left waiting on a closed loop (a test's, a stopped server's) must not keep the
    # next loop's readers waiting for a visit that never comes.
    batched = BatchedRead(lambda keys: {key: key * 2 for key in keys})

    async def abandon():
        reader = asyncio.ensure_future(batched(1))
        await asyncio.sleep(0)  # the read is queued, its visit scheduled; the loop ends
        return reader

    asyncio.run(abandon())

    async def read():
        return await asyncio.wait_for(batched(21), 5)

    assert asyncio.run(read()) == 42


# --- through the consumer ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("memory_layer")
async def test_sockets_that_authenticate_at_once_each_get_their_own_user_and_stream(make_user):
    users = [await sync_to_async(make_user)() for _ in range(8)]
    for index, user in enumerate(users):
        await sync_to_async(publish)(user, index)
    tokens = [access_token_for(user) for user in users for _ in range(3)]  # 3 sockets each
    opened = await asyncio.gather(*(connect(token) for token in tokens))
    try:
        connected = [message for _, message in opened]
        expected = [(str(user.id), index) for index, user in enumerate(users) for _ in range(3)]
        assert [(m["user_id"], m["last_event_id"]) for m in connected] == expected
    finally:
        for comm, _ in opened:
            await comm.disconnect()


# --- the read threads -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_each_read_thread_keeps_its_connection_between_reads(user, monkeypatch):
    # Under the pool a connection lives for no longer than a request (CONN_MAX_AGE 0): handed
    # back after each read, it would be taken and checked again by the next.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)

    def identify():
        connection.ensure_connection()
        return threading.get_ident(), connection.connection

    await close_read_thread_connections()
    seen: dict[int, set] = {}
    for _ in range(12):
        thread, raw = await read_from_database(identify)()
        seen.setdefault(thread, set()).add(id(raw))
        await read_from_database(event_list_for_user)(user_id=user.id, after=0, limit=10)
    assert seen and all(len(connections) == 1 for connections in seen.values())
    assert len(seen) <= settings.NOTIFICATIONS_READ_THREADS
