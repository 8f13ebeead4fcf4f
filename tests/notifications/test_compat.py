"""notifications/compat.py: every assumption it makes about a dependency, checked against the
installed versions; and the consumer's task-free write (a free lock taken at once, a send
coroutine started by hand and finished by a task, a frame written straight to uvicorn's socket)."""

import asyncio
import contextlib
import inspect
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from notifications import compat
from notifications.compat import Resumed as _Resumed
from notifications.compat import acquired_at_once as _acquired_at_once


async def test_a_free_lock_is_taken_at_once():
    lock = asyncio.Lock()
    assert _acquired_at_once(lock)
    assert lock.locked()
    assert not _acquired_at_once(lock)
    lock.release()
    assert not lock.locked()


async def test_a_lock_someone_waits_for_is_left_to_them():
    lock = asyncio.Lock()
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)  # the waiter is queued
    lock.release()  # free, but promised to the waiter
    assert not _acquired_at_once(lock)
    assert await waiter is True
    assert lock.locked()
    lock.release()


async def test_a_coroutine_that_finishes_at_once_needs_no_task():
    written = []

    async def send(frame):
        written.append(frame)

    coroutine = send("a")
    with pytest.raises(StopIteration):
        coroutine.send(None)
    assert written == ["a"]


def started_by_hand(coroutine):
    """Run the first step of `coroutine` as _forward_at_once does; return what it waits on."""
    blocked_on = coroutine.send(None)
    assert isinstance(blocked_on, asyncio.Future)
    return blocked_on


async def resumed(coroutine, blocked_on):
    return await _Resumed(coroutine, blocked_on)


async def test_a_task_finishes_a_send_that_had_to_wait():
    writable = asyncio.Event()
    written = []

    async def send(frame):
        await writable.wait()
        written.append(frame)
        return "done"

    coroutine = send("a")
    blocked_on = started_by_hand(coroutine)
    task = asyncio.ensure_future(resumed(coroutine, blocked_on))
    await asyncio.sleep(0.01)
    assert written == [] and not task.done()
    writable.set()
    assert await asyncio.wait_for(task, 1) == "done"
    assert written == ["a"]


async def test_a_waiting_send_is_cancelled_by_the_send_timeout():
    writable = asyncio.Event()
    cleaned_up = []

    async def send(frame):
        try:
            await writable.wait()
        finally:
            cleaned_up.append(frame)

    coroutine = send("a")
    blocked_on = started_by_hand(coroutine)

    async def with_timeout():
        async with asyncio.timeout(0.05):
            await _Resumed(coroutine, blocked_on)

    with pytest.raises(TimeoutError):
        await with_timeout()
    assert cleaned_up == ["a"]
    assert blocked_on.cancelled()


# --- every assumption of notifications/compat.py, against the installed versions -------------


async def test_sync_code_run_for_a_server_loop_finds_that_loop():
    from asgiref.sync import sync_to_async

    loop = asyncio.get_running_loop()
    assert await sync_to_async(compat.server_event_loop)() is loop
    assert compat.server_event_loop() is None  # this thread is not sync_to_async's


def test_sync_code_outside_any_server_finds_no_loop():
    assert compat.server_event_loop() is None


def test_django_pings_a_reused_connection_only_until_the_health_check_is_marked_done():
    # skip_health_check() sets the flag close_if_health_check_failed() reads.
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    source = inspect.getsource(BaseDatabaseWrapper.close_if_health_check_failed)
    assert "self.health_check_done" in source
    compat.skip_health_check(connection)
    assert connection.health_check_done is True


def test_the_pubsub_layer_has_the_private_parts_compat_relies_on():
    from channels_redis import pubsub, utils

    assert callable(utils._wrap_close)
    assert callable(pubsub.RedisPubSubChannelLayer._get_layer)
    layer = pubsub.RedisPubSubChannelLayer(hosts=[{"address": "redis://127.0.0.1:1"}])
    assert isinstance(layer._layers, dict) and layer._args == () and "hosts" in layer._kwargs
    loop_layer = pubsub.RedisPubSubLoopLayer(hosts=[{"address": "redis://127.0.0.1:1"}])
    assert all(isinstance(s, pubsub.RedisSingleShardConnection) for s in loop_layer._shards)
    assert callable(loop_layer._get_group_channel_name) and callable(loop_layer._get_shard)
    source = inspect.getsource(pubsub.RedisSingleShardConnection)
    assert "self._receive_message(" in source  # the reader hands every message to it
    # subscribe_many() repeats subscribe()'s own steps for several channels at once.
    shard = loop_layer._shards[0]
    assert isinstance(shard._lock, asyncio.Lock) and shard._subscribed_to == set()
    assert callable(shard._ensure_redis) and callable(shard._ensure_receiver)
    steps = inspect.getsource(pubsub.RedisSingleShardConnection.subscribe)
    order = [
        "async with self._lock",
        "self._ensure_redis()",
        "self._ensure_receiver()",
        "await self._pubsub.subscribe(channel)",
        "self._subscribed_to.add(channel)",
    ]
    assert [steps.index(step) for step in order] == sorted(steps.index(step) for step in order)
    unsubscribe = inspect.getsource(pubsub.RedisSingleShardConnection.unsubscribe)
    assert "self._subscribed_to.remove(channel)" in unsubscribe


async def test_subscribe_many_sends_one_command_and_records_each_channel(redis_url):
    from channels_redis import pubsub
    from redis import asyncio as aioredis

    loop_layer = pubsub.RedisPubSubLoopLayer(hosts=[{"address": redis_url}])
    shard = loop_layer._shards[0]
    client = aioredis.Redis.from_url(redis_url)
    try:
        before = (await client.info("commandstats")).get("cmdstat_subscribe", {}).get("calls", 0)
        await compat.subscribe_many(shard, ["compat-a", "compat-b", "compat-a"])
        await compat.subscribe_many(shard, ["compat-b"])  # already: nothing sent
        after = (await client.info("commandstats")).get("cmdstat_subscribe", {}).get("calls", 0)
        assert after - before == 1
        assert compat.subscribed(shard) == {"compat-a", "compat-b"}
        assert set(shard._pubsub.channels) == {
            b"compat-a",
            b"compat-b",
        }  # redis-py resubscribes these
    finally:
        await client.aclose()
        await shard.flush()


async def test_our_pubsub_layer_makes_its_own_loop_layers_and_shards(redis_url):
    from notifications.realtime import layers

    layer = layers.RedisPubSubChannelLayer(hosts=[{"address": redis_url}])
    try:
        loop_layer = compat.loop_layer(layer)
        assert isinstance(loop_layer, layers._LocalChannelsLoopLayer)
        assert compat.loop_layer(layer) is loop_layer  # one per loop
        shard, name = compat.shard_for_group(loop_layer, "g")
        assert isinstance(shard, layers._LocalDeliveryShard)
        assert name.endswith("__group__g")
        # A loop layer bound to no loop names and shards groups as the loop's own does.
        detached = compat.detached_loop_layer(layer, layers._LocalChannelsLoopLayer)
        assert detached is not loop_layer
        detached_shard, detached_name = compat.shard_for_group(detached, "g")
        assert (detached_shard.host, detached_name) == (shard.host, name)
        got = []
        channel = layer.new_local_channel(got.append)
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "x", "n": 1})
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
        assert got == [{"type": "x", "n": 1}]  # through the installed message handler
    finally:
        await layer.flush()


async def test_aborting_a_client_transport_drops_the_connection_at_once():
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def handler(ws):
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            compat.abort_transport(ws)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(2):
                    await ws.recv()


async def test_a_coroutine_that_needs_no_wait_finishes_on_its_first_step():
    async def done():
        return 1

    assert compat.run_until_blocked(done()) is None


async def test_a_coroutine_that_waits_is_finished_by_the_awaitable_returned():
    gate = asyncio.Event()

    async def waits():
        await gate.wait()
        return "finished"

    rest = compat.run_until_blocked(waits())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    gate.set()
    assert await task == "finished"


# --- Django: a hook just before commit (the event store's allocation at commit) ---------------


def commit_recorder():
    """(a hook factory, the log): each hook logs its before_commit batch and its run."""
    log = []

    class Hook:
        def __init__(self, name):
            self.name = name

        def __call__(self):
            log.append(("after", self.name))

        @staticmethod
        def before_commit(connection, hooks):
            log.append(("before", [hook.name for hook in hooks]))

    return Hook, log


@pytest.mark.django_db
def test_only_a_tests_own_atomic_blocks_count_as_a_committing_transaction():
    from django.db import connection, transaction

    assert connection.in_atomic_block  # the TestCase's blocks
    assert not compat.in_committing_transaction(connection)
    with transaction.atomic():
        assert compat.in_committing_transaction(connection)
        with transaction.atomic(savepoint=False):
            assert compat.in_committing_transaction(connection)
    assert not compat.in_committing_transaction(connection)


@pytest.mark.django_db(transaction=True)
def test_autocommit_is_not_a_committing_transaction_and_atomic_is():
    from django.db import connection, transaction

    assert not compat.in_committing_transaction(connection)
    with transaction.atomic():
        assert compat.in_committing_transaction(connection)


@pytest.mark.django_db(transaction=True)
def test_the_hooks_listed_at_commit_are_those_that_survived_savepoint_rollbacks():
    from django.db import connection, transaction

    Hook, log = commit_recorder()
    with transaction.atomic():
        transaction.on_commit(Hook("kept"))
        with contextlib.suppress(RuntimeError), transaction.atomic():
            transaction.on_commit(Hook("rolled back"))
            raise RuntimeError
        with transaction.atomic():
            transaction.on_commit(Hook("set_rollback"))
            transaction.set_rollback(True)
        transaction.on_commit(lambda: log.append(("after", "plain")))
        transaction.on_commit(Hook("kept too"), robust=True)
        assert [sids for sids, _, _ in connection.run_on_commit] == [set(), set(), set()]
    assert log == [
        ("before", ["kept", "kept too"]),
        ("after", "kept"),
        ("after", "plain"),
        ("after", "kept too"),
    ]


@pytest.mark.django_db(transaction=True)
def test_each_kind_of_hook_prepares_in_the_order_its_first_hook_was_registered():
    from django.db import transaction

    log = []

    def hook_kind(kind):
        class Hook:
            def __init__(self, name):
                self.name = name

            def __call__(self):
                pass

            @staticmethod
            def before_commit(connection, hooks):
                log.append((kind, [hook.name for hook in hooks]))

        return Hook

    Events, Receipts = hook_kind("events"), hook_kind("receipts")
    with transaction.atomic():
        transaction.on_commit(Events("a"))
        transaction.on_commit(Receipts("b"))
        transaction.on_commit(Events("c"))
    with transaction.atomic():
        transaction.on_commit(Receipts("d"))
        transaction.on_commit(Events("e"))
    assert log == [
        ("events", ["a", "c"]),
        ("receipts", ["b"]),
        ("receipts", ["d"]),
        ("events", ["e"]),
    ]


@pytest.mark.django_db(transaction=True)
def test_only_the_last_kind_to_prepare_at_a_real_commit_may_commit_and_only_if_it_says_so():
    from django.db import connection, transaction

    log = []

    def hook_kind(kind, commits):
        def before_commit(connection, hooks, commit=False):
            log.append((kind, commit))
            if commit and connection.vendor == "postgresql":  # as the event store does
                with compat.driver_cursor(connection, many_statements=True) as cursor:
                    cursor.execute("SELECT 1; COMMIT")

        before_commit.commits_with_last_statement = commits

        class Hook:
            def __call__(self):
                log.append((kind, "after commit"))

        Hook.before_commit = staticmethod(before_commit)
        return Hook

    Events, Receipts = hook_kind("events", True), hook_kind("receipts", False)
    with transaction.atomic():
        transaction.on_commit(Events())
    with transaction.atomic():
        transaction.on_commit(Events())
        transaction.on_commit(Receipts())
    assert log == [
        ("events", True),
        ("events", "after commit"),
        ("events", False),
        ("receipts", False),
        ("events", "after commit"),
        ("receipts", "after commit"),
    ]
    # Django's commit after a statement that committed: nothing to do, nothing broken.
    assert connection.in_atomic_block is False
    with transaction.atomic():
        assert connection.in_atomic_block


def test_psycopg_sends_nothing_to_commit_a_transaction_the_server_ended(db, tmp_path):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("psycopg")
    connection.ensure_connection()
    conn = connection.connection
    conn.autocommit = False
    try:
        conn.execute("SELECT 1; COMMIT")  # the simple protocol runs both
        assert conn.info.transaction_status.name == "IDLE"
        with open(tmp_path / "trace", "w") as trace:
            conn.pgconn.trace(trace.fileno())
            conn.commit()
            conn.pgconn.untrace()
        assert (tmp_path / "trace").read_text() == ""
    finally:
        conn.autocommit = True


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_hook_to_prepare():
    from django.db import transaction

    Hook, log = commit_recorder()
    with transaction.atomic():
        transaction.on_commit(Hook("dropped"))
        transaction.set_rollback(True)
    with transaction.atomic():
        pass
    assert log == []


@pytest.mark.django_db(transaction=True)
def test_atomic_commits_through_connection_commit_and_the_hook_may_write_there():
    from django.db import connection, connections, transaction

    from reasonflow.users.models import User

    written = []

    class Writes:
        def __call__(self):
            written.append(User.objects.filter(email="hook@example.com").exists())

        @staticmethod
        def before_commit(connection, hooks):
            assert not connection.in_atomic_block  # unset before commit(): queries may run
            User.objects.create_user(email="hook@example.com", password=None)

    assert isinstance(connections["default"], compat.RunsHooksBeforeCommit)  # project ENGINE
    with transaction.atomic():
        transaction.on_commit(Writes())
    assert written == [True]
    connection.close()  # the row is committed, not merely visible to this connection
    assert User.objects.filter(email="hook@example.com").exists()


@pytest.mark.django_db(transaction=True)
def test_a_manual_commit_runs_the_hook_too():
    from django.db import transaction

    Hook, log = commit_recorder()
    transaction.set_autocommit(False)
    try:
        with transaction.atomic():  # on_commit needs a block in manual mode
            transaction.on_commit(Hook("manual"))
        assert log == []
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert log == [("before", ["manual"]), ("after", "manual")]


@pytest.mark.django_db(transaction=True)
def test_a_database_error_before_commit_rolls_the_transaction_back_and_propagates():
    from django.db import IntegrityError, transaction

    from reasonflow.users.models import User

    class Fails:
        def __call__(self):
            raise AssertionError("must not run")

        @staticmethod
        def before_commit(connection, hooks):
            User.objects.create_user(email="twice@example.com", password=None)

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user(email="twice@example.com", password=None)
        User.objects.create_user(email="caller@example.com", password=None)
        transaction.on_commit(Fails())
    assert not User.objects.exists()


def test_the_driver_cursor_is_the_drivers_own_with_djangos_errors(db):
    from django.db import DatabaseError, connection
    from django.db.backends.utils import CursorWrapper

    with compat.driver_cursor(connection) as cursor:
        # PostgreSQL: the driver's own, binding on the server; elsewhere (SQLite's placeholders
        # differ) Django's.
        assert isinstance(cursor, CursorWrapper) == (connection.vendor != "postgresql")
        cursor.execute("SELECT %s", [41])
        assert cursor.fetchone() == (41,)
        if connection.vendor == "postgresql":
            import psycopg

            # Not Django's default ClientCursor, which quotes the values into the statement.
            assert type(cursor) is psycopg.Cursor
            assert not isinstance(cursor, psycopg.ClientCursor)
    # A driver error comes out as django.db's (the driver's own errors are not subclasses).
    with pytest.raises(DatabaseError), compat.driver_cursor(connection) as cursor:
        cursor.execute("SELECT * FROM notifications_no_such_table")


def test_the_driver_cursor_is_djangos_while_something_watches_the_queries(db, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    seen = []

    def watch(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch), compat.driver_cursor(connection) as cursor:
        cursor.execute("SELECT 1")
    assert seen == ["SELECT 1"]
    with CaptureQueriesContext(connection) as logged, compat.driver_cursor(connection) as cursor:
        cursor.execute("SELECT 2")
    assert [query["sql"] for query in logged.captured_queries] == ["SELECT 2"]


TIMESTAMPS = (
    "2026-12-04 18:05:40.123456+00",
    "2026-06-30 23:59:59-07:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2024-02-29 12:00:00+14",
)


def _timestamps_read(connection, loader_class=None, values=TIMESTAMPS) -> list:
    """`values` as the driver's cursor reads them, with `loader_class` on it if given."""
    import psycopg

    query = "SELECT v::timestamptz FROM unnest(%s::text[]) AS v"
    with psycopg.Cursor(connection.connection) as cursor:
        if loader_class is not None:
            cursor.adapters.register_loader("timestamptz", loader_class)
        return [row[0] for row in cursor.execute(query, [list(values)]).fetchall()]


def test_timestamps_are_read_in_c_as_djangos_loader_reads_them(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL driver's loader")
    from datetime import UTC

    import psycopg
    from django.db.backends.postgresql.psycopg_any import get_adapters_template
    from psycopg.pq import Format

    oid = psycopg.postgres.types["timestamptz"].oid
    djangos = get_adapters_template(True, UTC).get_loader(oid, Format.TEXT)
    # Django's loader is the pure-Python one, marked with the time zone create_cursor compares.
    assert djangos.timezone is UTC
    assert "psycopg.types.datetime" in {base.__module__ for base in djangos.__mro__}

    connection.ensure_connection()
    ours = connection.connection.adapters.get_loader(oid, Format.TEXT)
    assert ours is not djangos and ours.timezone is UTC
    expected = _timestamps_read(connection, djangos)
    read = _timestamps_read(connection)
    assert read == expected
    assert all(value.tzinfo is UTC for value in read)
    loader = ours(oid, connection.connection)
    assert loader.load is loader.parse  # the session is in UTC: the C loader, called directly
    if psycopg.pq.__impl__ != "python":
        # psycopg's C loader (psycopg_binary or psycopg_c), with no Python frame of ours.
        package = type(loader.parse.__self__).__module__.split(".")[0]
        assert package in {"psycopg_binary", "psycopg_c"}
    # Django's cursors keep our loader (create_cursor registers its own only on a mismatch).
    with connection.cursor() as cursor:
        assert cursor.cursor.adapters.get_loader(oid, Format.TEXT) is ours

    # Another session time zone: each value is moved to UTC, as Django's loader moves it.
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/St_Johns'")
    try:
        loader = ours(oid, connection.connection)
        assert loader.load != loader.parse
        values = TIMESTAMPS[:2]  # year 1 in UTC is 1 BC in Newfoundland: neither can read it
        expected = _timestamps_read(connection, djangos, values)
        read = _timestamps_read(connection, values=values)
        assert [value.isoformat() for value in read] == [v.isoformat() for v in expected]
        assert [value.tzinfo for value in read] == [UTC, UTC]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
    # What neither can read fails alike.
    with connection.cursor() as cursor, pytest.raises(Exception) as failure:
        cursor.execute("SELECT 'infinity'::timestamptz")
        cursor.fetchone()
    assert "infinity" in str(failure.value)


def test_psycopg_calls_the_load_an_instance_has_of_its_own(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL driver's loader")
    from psycopg.adapt import Loader

    class Marked(Loader):
        def __init__(self, oid, context=None):
            super().__init__(oid, context)
            self.load = lambda data: ("instance", bytes(data))

        def load(self, data):
            return ("class", bytes(data))

    connection.ensure_connection()
    assert _timestamps_read(connection, Marked)[0][0] == "instance"


@pytest.mark.django_db
def test_under_a_test_case_leaving_the_tests_outermost_block_releases_a_savepoint():
    from django.db import transaction

    Hook, log = commit_recorder()
    with transaction.atomic():
        transaction.on_commit(Hook("inner"))
        with transaction.atomic():
            pass  # a nested release is not where the commit would be
        assert log == []
    assert log == [("before", ["inner"])]  # the TestCase never commits: no "after"


@pytest.mark.django_db
def test_djangos_asgi_handler_serves_http_as_respond_in_one_hop_assumes():
    from django.core.handlers.asgi import ASGIHandler

    call = inspect.getsource(ASGIHandler.__call__)
    assert "async with ThreadSensitiveContext():" in call
    assert "await self.handle(scope, receive, send)" in call
    handle = inspect.getsource(ASGIHandler.handle)
    for used in (
        "body_file = await self.read_body(receive)",
        "set_script_prefix(get_script_prefix(scope))",
        "await signals.request_started.asend(sender=self.__class__, scope=scope)",
        "request, error_response = self.create_request(scope, body_file)",
        "await self.send_response(response, send)",
        "await sync_to_async(response.close)()",
    ):
        assert used in handle, used
    get_response = inspect.getsource(ASGIHandler.run_get_response)
    assert "response._handler_class = self.__class__" in get_response
    assert "response.block_size = self.chunk_size" in get_response


class CountingExecutor(ThreadPoolExecutor):
    """A request's thread that counts the hops made to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.hops = 0

    def submit(self, *args, **kwargs):
        self.hops += 1
        return super().submit(*args, **kwargs)


async def served_in_one_hop(path: str) -> tuple[int, dict, bytes, list[str], int]:
    """GET `path` from an ASGIHandler with respond_in_one_hop: the response's status, headers
    and body, the order in which request_started, request_finished and the response's
    messages came, and the number of thread hops."""
    from asgiref.sync import ThreadSensitiveContext
    from django.core.handlers.asgi import ASGIHandler
    from django.core.signals import request_finished, request_started

    from tests.support.asgi import http_scope

    handler = ASGIHandler()
    compat.respond_in_one_hop(handler)
    events, messages, thread = [], [], CountingExecutor()

    body_read = asyncio.Event()

    async def receive():
        if body_read.is_set():
            await asyncio.Event().wait()  # the client stays
        body_read.set()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        events.append(message["type"])
        messages.append(message)

    def started(**kwargs):
        events.append("request_started")

    def finished(**kwargs):
        events.append("request_finished")

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        async with ThreadSensitiveContext(executor=thread):
            await handler(http_scope(path, method="GET"), receive, send)
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
        thread.shutdown(wait=False)
    start, *bodies = messages
    headers = {name.lower(): value for name, value in start["headers"]}
    body = b"".join(message.get("body", b"") for message in bodies)
    return start["status"], headers, body, events, thread.hops


async def test_a_request_is_served_in_one_hop_closed_before_its_response_is_sent():
    status, headers, _, events, hops = await served_in_one_hop("/healthz")

    assert status == 200
    assert headers[b"x-content-type-options"] == b"nosniff"  # Django's middleware ran
    assert hops == 1  # Django alone: three
    assert events == [
        "request_started",
        "request_finished",
        "http.response.start",
        "http.response.body",
    ]

    status, _, body, _, hops = await served_in_one_hop("/api/v1/emails/")
    assert (status, hops) == (401, 1)
    assert json.loads(body) == {"detail": "Authentication credentials were not provided."}


async def test_a_streamed_response_is_closed_after_it_is_sent():
    from pathlib import Path

    status, _, body, events, _ = await served_in_one_hop("/static/notifications/console.css")

    assert status == 200
    css = Path(__file__).parents[2] / "reasonflow/console/static/notifications/console.css"
    assert body == css.read_bytes()
    assert events[0] == "request_started" and events[-1] == "request_finished"
    assert events[1:-1] == ["http.response.start"] + ["http.response.body"] * (len(events) - 3)


# --- uvicorn: frames written straight to the socket ---------------------------------------------


@contextlib.asynccontextmanager
async def uvicorn_serving(app, http: type | None = None):
    """`app` under uvicorn in this event loop, with serve's protocols (the lean httptools one,
    unless `http` is given, and the lean sans-I/O WebSocket one, no compression)."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from tests.support.redis import free_port

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http or compat.lean_http_protocol(HttpToolsProtocol),
        ws=compat.lean_websocket_protocol(WebSocketsSansIOProtocol),
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@contextlib.asynccontextmanager
async def client_that_stops_reading(app):
    """A client of `app` (under uvicorn_serving) that has stopped reading; resume_reading()
    on its transport lets it go on."""
    from websockets.asyncio.client import connect

    async with (
        uvicorn_serving(app) as url,
        connect(url, compression=None, max_size=None, max_queue=1) as ws,
    ):
        ws.transport.pause_reading()
        yield ws


async def test_uvicorn_frames_written_at_once_arrive_as_text_frames_in_order():
    from websockets.asyncio.client import connect

    shared = "é" * 70  # one string for two connections: its frame is built once
    outcomes = []

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        assert compat.text_frame_writer(send) is None  # nothing accepted yet
        await send({"type": "websocket.accept"})
        write = compat.text_frame_writer(send)
        texts = ["hello", shared, "x" * 200, "y" * 70_000]
        outcomes.append([write(text) for text in texts])
        await send({"type": "websocket.send", "text": "the ordinary way"})
        await send({"type": "websocket.close", "code": 1000})
        outcomes.append(write("after close"))  # the close frame went first: never after it

    async with uvicorn_serving(app) as url:
        for _ in range(2):
            async with connect(url, compression=None, max_size=None) as ws:
                received = [await ws.recv() for _ in range(5)]
                assert received == ["hello", shared, "x" * 200, "y" * 70_000, "the ordinary way"]
    assert outcomes == [[True] * 4, False] * 2


def writes_until_refused(write) -> bool:
    """Write 64 KiB texts to a client that has stopped reading until `write` says False
    (at most 128 MiB: uvicorn pauses writing long before); False when it did."""
    chunk = "z" * 65_536
    return all(write(chunk) for _ in range(2_000))


async def test_uvicorn_frames_wait_for_a_client_that_stops_reading():

    said = []
    stop = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        write = compat.text_frame_writer(send)
        said.append(writes_until_refused(write))
        stop.set()
        await receive()

    async with client_that_stops_reading(app) as ws:
        await asyncio.wait_for(stop.wait(), 30)
        ws.transport.resume_reading()
    assert said == [False]


async def test_no_frame_writer_for_another_servers_send():
    async def send(message):
        pass

    assert compat.text_frame_writer(send) is None


# --- uvicorn: chunks written at once (the event stream) --------------------------------------


async def http_get(url: str, request_line: str = "GET / HTTP/1.1") -> tuple[bytes, bytes]:
    """(head, body) of one request to `url` (ws://host:port from uvicorn_serving), read until
    the server closes the connection: the body exactly as sent, chunk framing included."""
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{request_line}\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def chunked(*texts: str) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(t.encode()), t.encode()) for t in texts)


async def test_uvicorn_chunks_written_at_once_arrive_in_order_as_the_server_frames_them():
    shared = "é" * 70  # one string for two responses: its chunk is built once
    outcomes = []

    async def app(scope, receive, send):
        await receive()
        assert compat.chunk_writer(send) is None  # nothing started yet
        await send({"type": "http.response.start", "status": 200, "headers": []})
        write = compat.chunk_writer(send)
        texts = ["hello\n", shared, "", "x" * 70_000]
        outcomes.append([write(text) for text in texts])
        await send({"type": "http.response.body", "body": b"the ordinary way", "more_body": True})
        await send({"type": "http.response.body", "body": b""})  # complete
        outcomes.append(write("after the end"))  # never after the last chunk

    async with uvicorn_serving(app) as url:
        for _ in range(2):
            head, body = await http_get(url)
            assert b"transfer-encoding: chunked" in head.lower()
            expected = chunked("hello\n", shared, "x" * 70_000, "the ordinary way")
            assert body == expected + b"0\r\n\r\n"
    assert outcomes == [[True] * 4, False] * 2


@pytest.mark.parametrize(
    ("request_line", "headers"),
    [
        ("GET / HTTP/1.1", [(b"content-length", b"5")]),  # a length, not chunks
        ("HEAD / HTTP/1.1", []),  # no body at all
    ],
)
async def test_no_chunk_writer_where_uvicorn_sends_no_chunks(request_line, headers):
    writers = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        writers.append(compat.chunk_writer(send))
        await send({"type": "http.response.body", "body": b"hello"})

    async with uvicorn_serving(app) as url:
        await http_get(url, request_line)
    assert writers == [None]


async def test_uvicorn_chunks_wait_for_a_client_that_stops_reading():
    said = []
    stop = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        write = compat.chunk_writer(send)
        said.append(writes_until_refused(write))
        stop.set()
        await send({"type": "http.response.body", "body": b""})

    async with uvicorn_serving(app) as url:
        host, port = url.removeprefix("ws://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.transport.pause_reading()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await asyncio.wait_for(stop.wait(), 30)
        writer.transport.resume_reading()
        await asyncio.wait_for(reader.read(), 30)
        writer.close()
    assert said == [False]


async def test_no_chunk_writer_for_another_servers_send():
    async def send(message):
        pass

    assert compat.chunk_writer(send) is None


def test_uvicorns_response_keeps_what_the_chunk_writer_reads():
    from uvicorn.protocols.http import httptools_impl as module

    used = _attributes_used_on(module, "flow") | _attributes_used_on(module, "transport")
    assert {"write_paused", "write"} <= used
    source = inspect.getsource(module.RequestResponseCycle.send)
    for name in ("response_started", "response_complete", "disconnected", "chunked_encoding"):
        assert f"self.{name}" in source
    # The chunk's framing is uvicorn's own.
    assert 'content = [b"%x\\r\\n" % len(body), body, b"\\r\\n"]' in source


# --- uvicorn: the lean WebSocket protocol ----------------------------------------------------


def _attributes_used_on(module, name: str) -> set[str]:
    """Every X in `self.<name>.X` in `module`'s source."""
    import ast

    used = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == name
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            used.add(node.attr)
    return used


def test_uvicorns_protocol_uses_only_what_the_inbox_and_the_flag_offer():
    from uvicorn.protocols.websockets import websockets_sansio_impl as module

    assert (
        {"put_nowait", "get"}
        <= _attributes_used_on(module, "queue")
        <= {
            "put_nowait",
            "get",
            "empty",
        }
    )
    # is_set is text_frame_writer's.
    assert (
        {"set", "wait"}
        <= _attributes_used_on(module, "writable")
        <= {
            "set",
            "clear",
            "is_set",
            "wait",
        }
    )
    for name in ("put_nowait", "get", "empty"):
        assert callable(getattr(compat.Inbox, name))
    for name in ("set", "clear", "is_set", "wait"):
        assert callable(getattr(compat.Flag, name))


def test_uvicorn_reads_the_handshake_response_only_before_the_handshake_is_complete():
    import ast

    from uvicorn.protocols.websockets import websockets_sansio_impl as module

    readers = set()
    for function in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "response"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                ):
                    readers.add(function.name)
    # handle_connect makes it; send uses it in its branch for a handshake not yet complete.
    assert readers == {"handle_connect", "send"}
    source = inspect.getsource(module.WebSocketsSansIOProtocol.send)
    branch = source.index("if not self.handshake_complete and self.initial_response is None:")
    after = source.index("\n        else", branch)  # the next branch of the same if
    assert all(branch < use.start() < after for use in re.finditer(r"self\.response", source))


async def test_a_cancelled_get_leaves_the_item_for_the_next():
    inbox = compat.Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    first.cancel()
    inbox.put_nowait("a")  # put while the cancellation is pending
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not inbox.empty()
    assert await inbox.get() == "a"
    assert inbox.empty() and inbox._waiters is None


async def test_the_inbox_hands_items_over_in_order_to_waiting_readers():
    inbox = compat.Inbox()
    readers = [asyncio.ensure_future(inbox.get()) for _ in range(2)]
    await asyncio.sleep(0)
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert sorted(await asyncio.gather(*readers)) == [1, 2]
    inbox.put_nowait(3)
    assert await inbox.get() == 3  # no wait when an item is there
    assert inbox._waiters is None


async def test_the_flag_waits_like_an_asyncio_event():
    for flag in (compat.Flag(), asyncio.Event()):
        assert not flag.is_set()
        waiter = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0)
        flag.set()
        flag.clear()  # set and cleared again before the waiter runs: it still returns
        assert await waiter is True
        flag.set()
        assert flag.is_set() and await flag.wait() is True
        flag.clear()
        cancelled = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        if isinstance(flag, compat.Flag):
            assert flag._waiters is None  # the cancelled waiter left
    assert compat.Flag(True).is_set()


async def test_the_lean_protocol_serves_a_connection_and_lets_the_handshake_go():
    from websockets.asyncio.client import connect

    seen = {}

    async def app(scope, receive, send):
        protocol = send.__self__
        seen["parts"] = (type(protocol.queue), type(protocol.writable))
        assert (await receive())["type"] == "websocket.connect"
        assert protocol.response is not None
        await send({"type": "websocket.accept"})
        seen["response"] = protocol.response
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"].upper()})
        seen["end"] = await receive()

    async with uvicorn_serving(app) as url, connect(url, compression=None) as ws:
        await ws.send("ping")
        assert await ws.recv() == "PING"
        await ws.close()
    assert seen["parts"] == (compat.Inbox, compat.Flag)
    assert seen["response"] is None
    assert seen["end"]["type"] == "websocket.disconnect"


async def settled(read, quiet: float = 0.3, timeout: float = 10):
    """read()'s value once it has stayed the same for `quiet` seconds."""
    async with asyncio.timeout(timeout):
        value = read()
        while True:
            await asyncio.sleep(quiet)
            if read() == value:
                return value
            value = read()


async def test_the_lean_protocols_send_waits_for_a_client_that_stops_reading():

    progress = {"sent": 0}
    paused = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        writable = send.__self__.writable
        chunk = "z" * 65_536
        for _ in range(400):  # 25 MiB at most: the transport pauses long before
            if not writable.is_set():
                paused.set()
            await send({"type": "websocket.send", "text": chunk})
            progress["sent"] += 1
        await receive()

    async with client_that_stops_reading(app) as ws:
        await asyncio.wait_for(paused.wait(), 30)
        # Loopback buffers may still grow and take a few more chunks; then sending stops.
        stalled = await settled(lambda: progress["sent"])
        await asyncio.sleep(0.2)
        assert progress["sent"] == stalled < 400  # send() waits on the flag
        ws.transport.resume_reading()
        for _ in range(400):
            assert len(await asyncio.wait_for(ws.recv(), 30)) == 65_536
    assert progress["sent"] == 400


async def test_an_upgraded_connections_http_protocol_is_freed_without_the_collector():
    import gc
    import weakref

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from websockets.asyncio.client import connect

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    def recording(base: type, made: list) -> type:
        def connection_made(self, transport):
            made.append(weakref.ref(self))
            base.connection_made(self, transport)

        return type("Recording", (base,), {"connection_made": connection_made})

    left = {}
    gc.disable()
    try:
        for name, base in (
            ("lean", compat.lean_http_protocol(HttpToolsProtocol)),
            ("uvicorn's", HttpToolsProtocol),
        ):
            made = []
            async with uvicorn_serving(app, http=recording(base, made)) as url:
                async with connect(url, compression=None) as ws:
                    await ws.send("hello")
                left[name] = sum(ref() is not None for ref in made)
    finally:
        gc.enable()
    # uvicorn's own stays in a reference cycle (its parser's callbacks) until a collection.
    assert left == {"lean": 0, "uvicorn's": 1}


# --- Django and REST framework: a finished request freed by reference counting ----------------


def test_the_cycles_a_finished_rest_request_leaves_are_broken(db, user):
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.messages.middleware import MessageMiddleware
    from django.contrib.sessions.middleware import SessionMiddleware
    from rest_framework import serializers
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    class Child(serializers.Serializer):
        email = serializers.EmailField()

    class Parent(serializers.Serializer):
        email = serializers.EmailField()
        friend = Child(source="*")

    seen = {}

    class View(APIView):
        permission_classes = []

        def get(self, request):
            seen["view"], seen["drf_request"] = self, request
            serializer = Parent([user], many=True)
            seen["serializer"] = serializer
            return Response({"count": 1, "results": serializer.data})

    def view_chain(request):
        response = View.as_view()(request)
        return response.render()

    chain = SessionMiddleware(AuthenticationMiddleware(MessageMiddleware(view_chain)))
    request = APIRequestFactory().get("/")
    response = chain(request)
    assert response.status_code == 200
    view, drf_request, serializer = seen["view"], seen["drf_request"], seen["serializer"]
    # The cycles, as REST framework and Django make them.
    assert response.renderer_context["response"] is response
    assert response.renderer_context["view"] is view and view.response is response
    assert drf_request.parser_context["request"] is drf_request
    results = response.data["results"]
    assert results.serializer is serializer and serializer.child.parent is serializer
    assert serializer.child.fields["friend"].parent is serializer.child
    assert {"user", "auser", "_messages"} <= set(vars(request))
    assert request._messages.request is request

    compat.release_request_cycles(request, response)

    assert response.renderer_context is None and vars(view) == {}
    assert drf_request.parser_context is None
    assert results.serializer is None and vars(serializer) == {}
    assert not {"user", "auser", "_messages"} & set(vars(request))
    assert json.loads(response.content)["results"] == [
        {"email": user.email, "friend": {"email": user.email}}
    ]


# --- prometheus-client ----------------------------------------------------------------------


def test_observe_each_leaves_a_histogram_as_observing_each_amount_does():
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.values import MultiProcessValue

    buckets = (0.001, 0.01, 0.1, 1)
    amounts = [0, 0.001, 0.0011, 0.05, 0.1, 0.5, 1, 2, 30, 0.01, 0.01]

    def histogram(*labels):
        return Histogram("latency", "", labels, buckets=buckets, registry=CollectorRegistry())

    def samples(metric):
        return [
            (s.name, s.labels, s.value)
            for family in metric.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    ours, theirs = histogram(), histogram()
    compat.observe_each(ours, amounts)
    compat.observe_each(ours, [])
    for amount in amounts:
        theirs.observe(amount)
    assert samples(ours) == samples(theirs)
    # What it reads: ascending bounds with +Inf last, one value per bound, each value (the
    # multiprocess one too) adding an amount.
    assert list(ours._upper_bounds) == [*buckets, float("inf")]
    assert len(ours._buckets) == len(ours._upper_bounds)
    assert all(callable(value.inc) for value in [*ours._buckets, ours._sum])
    assert "amount" in inspect.signature(MultiProcessValue().inc).parameters
    # A histogram with labels is observed through its children, as observe() insists.
    labelled = histogram("route")
    with pytest.raises(ValueError) as refused:
        compat.observe_each(labelled, [1])
    with pytest.raises(ValueError) as theirs_refused:
        labelled.observe(1)
    assert str(refused.value) == str(theirs_refused.value)


# --- rows loaded and updated as the ORM does ------------------------------------------------


def _project_models():
    from emails.models import BatchJob, Draft, Email, MailAccount
    from notifications.models import Event
    from reasonflow.users.models import User

    return [User, Email, Draft, BatchJob, MailAccount, Event]


@pytest.mark.parametrize("model", _project_models(), ids=lambda model: model.__name__)
def test_column_converters_are_those_the_orm_applies_to_each_column(db, model):
    from django.db import connection

    compiler = model.objects.all().query.get_compiler(connection=connection)
    compiler.setup_query()
    expressions = [selected[0] for selected in compiler.select]
    assert [expression.target for expression in expressions] == list(model._meta.concrete_fields)
    orms = compiler.get_converters(expressions)
    ours = compat.column_converters(model._meta.concrete_fields, connection)
    assert {index: converters for index, (converters, _) in orms.items()} == {
        index: converters for index, _, converters in ours
    }
    assert all(column == orms[index][1] for index, column, _ in ours)


def test_each_converter_is_called_as_value_column_connection(db):
    import uuid

    from django.db import connection

    from emails.models import Email
    from tests.emails.factories import EmailFactory

    email = EmailFactory(classification_reasons=["asks", "polite"], confidence=0.5)
    with connection.cursor() as cursor:
        fields = Email._meta.concrete_fields
        cursor.execute(
            f"SELECT {', '.join(connection.ops.quote_name(f.column) for f in fields)} "  # noqa: S608
            f"FROM {Email._meta.db_table} WHERE id = %s",
            [Email._meta.pk.get_db_prep_value(email.pk, connection)],
        )
        values = list(cursor.fetchone())
    for index, column, converters in compat.column_converters(fields, connection):
        for convert in converters:
            values[index] = convert(values[index], column, connection)
    loaded = dict(zip([f.attname for f in fields], values, strict=True))
    stored = Email.objects.get(pk=email.pk)
    assert loaded == {f.attname: getattr(stored, f.attname) for f in fields}
    assert isinstance(loaded["id"], uuid.UUID)
    assert loaded["classification_reasons"] == ["asks", "polite"]


def test_django_saves_an_existing_row_through_do_update_as_updates_by_sql_assumes(db):
    from django.db.models import Model

    assert list(inspect.signature(Model._do_update).parameters) == [
        "self",
        "base_qs",
        "using",
        "pk_val",
        "values",
        "update_fields",
        "forced_update",
    ]
    source = "".join(inspect.getsource(Model._save_table).split())
    assert "updated=self._do_update(base_qs,using,pk_val,values,update_fields,forced_update)" in (
        source
    )
    assert "(f,None,(getattr(self,f.attname)ifrawelsef.pre_save(self,False)),)" in source


@pytest.mark.parametrize("model", _project_models(), ids=lambda model: model.__name__)
def test_models_that_update_by_sql_filter_nothing_in_their_base_manager(model):
    from django.db import models

    if not issubclass(model, compat.UpdatesBySql):
        pytest.skip("saves the ORM's way")
    assert type(model._base_manager) is models.Manager
    assert not model._meta.parents and not model._meta.select_on_save


def _djangos_update(model, pk, values, connection):
    from django.db.models.sql import UpdateQuery

    query = UpdateQuery(model)
    query.add_update_fields(values)
    query.add_filter("pk", pk)
    return query.get_compiler(connection=connection).as_sql()


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "approved", "error": ""},
        {"subject": "Re: it", "body": "Thanks!\n", "sent_at": "now", "message_id": "<m@x>"},
        {"requires_approval": False},
    ],
)
def test_the_update_written_once_is_the_orms_with_the_same_parameters(db, changes):
    from django.db import connection
    from django.utils import timezone

    from emails.models import Draft
    from tests.emails.factories import DraftFactory

    draft = DraftFactory()
    changes = {name: timezone.now() if value == "now" else value for name, value in changes.items()}
    values = [(Draft._meta.get_field(name), None, value) for name, value in changes.items()]
    djangos_sql, djangos_params = _djangos_update(Draft, draft.pk, values, connection)
    fields = tuple(field for field, _, _ in values)
    ours = compat._update_sql(Draft, fields, connection)
    params = [field.get_db_prep_save(value, connection) for field, _, value in values]
    params.append(Draft._meta.pk.get_db_prep_value(draft.pk, connection))
    # Django qualifies the key's column with its table too.
    assert ours == djangos_sql
    assert params == list(djangos_params)


def test_a_save_sends_the_update_written_once_and_reports_a_missing_row(db):
    from django.db import DatabaseError, connection
    from django.test.utils import CaptureQueriesContext

    from emails.models import Draft
    from tests.emails.factories import DraftFactory

    draft = DraftFactory()
    draft.status, draft.error = "failed", "refused"
    with CaptureQueriesContext(connection) as captured:
        draft.save(update_fields=["status", "error"])
    [update] = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE")]
    assert update.startswith('UPDATE "emails_draft" SET "status" = ')
    stored = Draft.objects.get(pk=draft.pk)
    assert (stored.status, stored.error) == ("failed", "refused")
    Draft.objects.filter(pk=draft.pk).delete()
    # As Django reports it: a save of update_fields that updated no row.
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        draft.save(update_fields=["status"])


def test_values_the_update_written_once_cannot_send_take_djangos_way(db):
    from django.db.models import F

    from emails.models import Draft, Email
    from tests.emails.factories import DraftFactory

    draft = DraftFactory(sent_at=None)
    draft.sent_at = None  # NULL, which Django writes into the statement
    draft.save(update_fields=["sent_at"])
    draft.subject = F("body")  # an expression
    draft.save(update_fields=["subject"])
    stored = Draft.objects.get(pk=draft.pk)
    assert stored.sent_at is None and stored.subject == stored.body
    draft.email = Email.objects.exclude(pk=draft.email_id).first() or draft.email
    draft.save(update_fields=["email"])  # a model instance for a foreign key
    assert Draft.objects.get(pk=draft.pk).email_id == draft.email_id


def test_the_pool_keeps_its_check_as_use_pool_check_assumes(db):
    from django.db import connection
    from psycopg_pool import ConnectionPool

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's pool")
    checked = []

    def check(conn):
        checked.append(conn)

    url = connection.get_connection_params()
    pool = ConnectionPool(
        kwargs={**url, "autocommit": True},
        min_size=1,
        max_size=1,
        open=False,
        check=ConnectionPool.check_connection,
    )
    pool.open(wait=True)
    try:
        compat.use_pool_check(pool, check)
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        assert len(checked) == 3  # every connection handed out

        def refuse(conn):
            raise OSError("not fit")

        compat.use_pool_check(pool, refuse)
        with pytest.raises(Exception), pool.connection(timeout=0.5):  # noqa: B017
            pass  # a connection its check refuses is never handed out
    finally:
        pool.close()
    unchecked = ConnectionPool(kwargs={**url}, min_size=1, open=False, check=None)
    compat.use_pool_check(unchecked, check)
    assert unchecked._check is None  # no health checks asked for: none given
