"""The production server (`manage.py serve`) and its database connections: pooled, returned
after every request and every socket's read, so steady load opens no PostgreSQL sessions."""

import asyncio
import http.client
import time
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from emails.models import Email
from tests.conftest import access_token_for
from tests.support.live import LiveServer
from tests.support.live_clients import ws_connect
from tests.support.shared_db import live_database_url

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
            assert response.status == 200, response.read()
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
