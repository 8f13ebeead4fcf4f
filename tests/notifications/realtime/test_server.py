"""The production server: uvicorn as server_config() configures it, run in this process, and
NotifyServer's shutdown (every socket closed 4012, this process's presence withdrawn); its
database connections, pooled and returned after every request and every socket's read, so steady
load opens no PostgreSQL sessions. SIGTERM to a whole server process with hundreds of clients is
in tests/live/test_faults.py."""

import asyncio
import http.client
import json
import resource
import threading
import time
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from emails.models import Email
from notifications.close_codes import CloseCode
from notifications.events import EventType, sample_data
from notifications.publish import publish_event
from notifications.realtime.connections import registry
from notifications.realtime.presence import presence_count_for_user, tracker
from notifications.realtime.server import close_request_connections, server_config
from tests.conftest import access_token_for
from tests.support.demo_server import api
from tests.support.live import LiveServer, notify_server_here
from tests.support.live_clients import close_code, ws_connect
from tests.support.shared_db import live_database_url
from tests.support.ws import wait_until


@pytest.fixture
async def server(transactional_db, memory_layer):
    """NotifyServer on 127.0.0.1 in this event loop, serving the test database."""
    async with notify_server_here() as server:
        yield server


async def registry_emptied() -> bool:
    return not registry.all()


async def test_shutdown_closes_every_socket_4012_and_withdraws_this_processes_presence(
    server, user, other_user
):
    sockets = [
        (await ws_connect(server.ws_url, access_token_for(owner)))[0]
        for owner in (user, user, other_user)
    ]
    await tracker.publish()
    count = sync_to_async(presence_count_for_user)
    assert await count(user_id=user.id) == 2

    server.should_exit = True
    codes = await asyncio.gather(*(close_code(ws) for ws in sockets))

    assert codes == [CloseCode.RESTARTING] * 3
    await wait_until(registry_emptied)
    assert await count(user_id=user.id) == 0
    assert await count(user_id=other_user.id) == 0


async def test_events_are_written_straight_to_the_socket_under_the_server(server, user):
    # The fan-out's fast path (compat.text_frame_writer) is on under the production config,
    # and what it writes is what the client reads.
    ws, _ = await ws_connect(server.ws_url, access_token_for(user))
    (consumer,) = registry.by_user[user.id]
    assert consumer.stream.write_at_once is not None
    published = [
        await sync_to_async(publish_event)(
            user_id=user.id,
            event_type=EventType.EMAIL_RECEIVED,
            data=sample_data(EventType.EMAIL_RECEIVED),
        )
        for _ in range(3)
    ]
    received = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in published]
    assert [event["id"] for event in received] == [event.event_id for event in published]
    await ws.close()


async def test_a_frame_over_the_contracts_limit_is_answered_4009_not_dropped_by_uvicorn(
    server, user, settings
):
    ws, _ = await ws_connect(server.ws_url, access_token_for(user))
    await ws.send(json.dumps({"type": "ping", "pad": "x" * settings.NOTIFICATIONS_MAX_FRAME_BYTES}))
    assert await close_code(ws) == CloseCode.FRAME_TOO_LARGE


@pytest.mark.live
def test_serve_raises_its_open_file_limit_to_the_hard_one_and_says_so():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if not Path("/proc/self/limits").exists() or hard in (resource.RLIM_INFINITY, 256):
        pytest.skip("reads /proc (Linux), and needs a hard limit to raise a soft one to")
    with LiveServer(open_files=256) as server:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text().splitlines()
        log = server.log()
    (open_files,) = [line.split() for line in limits if line.startswith("Max open files")]
    assert open_files[3:5] == [str(hard), str(hard)]  # soft, hard
    assert f"open-file limit {hard}: each socket takes one" in log


def test_forwarded_headers_count_only_when_proxies_are_listed(settings):
    settings.FORWARDED_ALLOW_IPS = ""
    assert server_config(host="127.0.0.1", port=1).proxy_headers is False
    settings.FORWARDED_ALLOW_IPS = "10.0.0.5"
    config = server_config(host="127.0.0.1", port=1)
    assert (config.proxy_headers, config.forwarded_allow_ips) == (True, "10.0.0.5")
    assert server_config(host="127.0.0.1", port=1, proxy_headers=False).proxy_headers is False


@pytest.mark.django_db(transaction=True)
def test_a_request_threads_database_connections_are_closed_with_the_request():
    seen = {}

    def request_thread() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        seen["open"] = connection.connection is not None
        close_request_connections()
        seen["after"] = connection.connection

    thread = threading.Thread(target=request_thread)
    thread.start()
    thread.join(10)
    assert seen == {"open": True, "after": None}


@pytest.fixture
def live_server_on_the_test_database(transactional_db):
    """A server process (`manage.py serve`) on the test database: the test's rows are visible."""
    with LiveServer(env={"DATABASE_URL": live_database_url()}) as server:
        yield server


@pytest.mark.live
def test_serve_closes_each_requests_database_connection(
    live_server_on_the_test_database, user, staff_user
):
    # Django runs each ASGI request's sync code in a thread that ends with the request: a
    # connection left open there outlived it until a garbage collection, and PostgreSQL ran
    # out of connections under REST load.
    if connection.vendor != "postgresql":
        pytest.skip("counts server connections: PostgreSQL only")

    def server_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    def publish() -> None:
        status, body = api(
            live_server_on_the_test_database.http_url,
            "POST",
            "notifications/test",
            token=access_token_for(staff_user),
            body={"user": str(user.pk), "type": "draft_ready"},
        )
        assert status == 201, body

    publish()
    before = server_connections()
    for _ in range(40):
        publish()
    assert server_connections() - before <= 2


POOL_MAX = 4  # below the requests' and the read threads' concurrency, so a leak would show
SERVER_APPLICATION = "pooled-serve-test"  # tells the server's backends from this process's


@pytest.fixture
def pooled_server(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL sessions: PostgreSQL only")
    server = LiveServer(
        env={
            "DATABASE_URL": f"{live_database_url()}?application_name={SERVER_APPLICATION}",
            "DATABASE_POOL_MIN_SIZE": "1",
            "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
            "DATABASE_POOL_TIMEOUT": "5",
            # Sockets connect many at once, all from 127.0.0.1, all for one user.
            "NOTIFICATIONS_MAX_CONNECTIONS_PER_USER": "100",
            "NOTIFICATIONS_CONNECT_RATE_PER_IP": "0",
            "NOTIFICATIONS_MAX_PENDING_PER_IP": "0",
        }
    )
    server.start()
    yield server
    server.stop()


def _database_counts() -> tuple[int, int]:
    """Sessions ever opened on the test database, and the server's open now.

    Backends report their statistics about once a second: wait that long first."""
    time.sleep(1.5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        sessions = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [SERVER_APPLICATION],
        )
        return sessions, cursor.fetchone()[0]


def _get_emails(server: LiveServer, token: str, count: int) -> None:
    client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        for _ in range(count):
            client.request(
                "GET", "/api/v1/emails/?page_size=50", headers={"Authorization": f"Bearer {token}"}
            )
            response = client.getresponse()
            assert response.status == 200, (response.read(), server.log()[-4000:])
            assert len(response.read()) > 2
    finally:
        client.close()


@pytest.mark.live
def test_rest_requests_under_serve_reuse_pooled_connections(pooled_server, user):
    Email.objects.bulk_create(
        Email(
            owner=user,
            source_message_id=f"<{uuid.uuid4()}@test>",
            sender="a@example.com",
            received_at=timezone.now(),
        )
        for _ in range(5)
    )
    token = access_token_for(user)
    _get_emails(pooled_server, token, 20)  # the pool fills to what this load needs
    sessions_before, _ = _database_counts()
    _get_emails(pooled_server, token, 200)
    sessions_after, open_now = _database_counts()
    # Without the pool: one new session per request (200).
    assert sessions_after - sessions_before <= 2
    assert open_now <= POOL_MAX


async def _connect_sockets(server: LiveServer, token: str, count: int) -> None:
    connected = await asyncio.gather(*(ws_connect(server.ws_url, token) for _ in range(count)))
    await asyncio.gather(*(ws.close() for ws, _ in connected))


@pytest.mark.live
def test_socket_connects_under_serve_reuse_pooled_connections(pooled_server, user):
    # Each connect reads the user and its stream position in the loop's executor threads
    # (notifications/realtime/database.py), which take and return pooled connections.
    token = access_token_for(user)
    asyncio.run(_connect_sockets(pooled_server, token, 5))
    sessions_before, _ = _database_counts()
    asyncio.run(_connect_sockets(pooled_server, token, 60))
    sessions_after, open_now = _database_counts()
    assert sessions_after - sessions_before <= 2
    assert open_now <= POOL_MAX


@pytest.mark.live
def test_pooled_connections_the_database_ended_are_replaced_before_a_request_uses_them(
    pooled_server, user
):
    # After a database restart every idle connection in the pool is dead; none may reach a
    # request (a 500).
    token = access_token_for(user)
    _get_emails(pooled_server, token, 10)  # the pool holds connections now
    with connection.cursor() as cursor:
        # By the time a restart is over its sessions have ended; without a timeout
        # pg_terminate_backend returns before the backend has even read its signal.
        cursor.execute(
            "SELECT count(*), bool_and(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [SERVER_APPLICATION],
        )
        terminated, all_ended = cursor.fetchone()
        assert terminated >= 1
        assert all_ended
    _get_emails(pooled_server, token, 20)  # every one answers 200
