"""reasonflow/db/pool.py: the pool's check on each connection it hands out costs no round trip
for a healthy connection and refuses one whose session has ended."""

import select

import psycopg
import pytest
from django.db import connection

from reasonflow.db.pool import check_connection

pytestmark = pytest.mark.django_db


@pytest.fixture
def session():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's connection pool")
    params = connection.get_connection_params()
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True, application_name="pool-check-test") as conn:
        yield conn


def _last_query(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def test_a_healthy_connection_passes_without_a_round_trip(session):
    session.execute("SELECT 'marker'")
    check_connection(session)
    check_connection(session)
    # The pool's own check would have sent an empty query: the backend's last would be ''.
    assert _last_query(session.info.backend_pid) == "SELECT 'marker'"


def test_a_connection_whose_session_the_server_ended_is_refused(session):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [session.info.backend_pid])
    # The backend ends on its signal, a moment later: its FATAL, then the end of the stream.
    readable, _, _ = select.select([session.fileno()], [], [], 5)
    assert readable
    with pytest.raises(psycopg.OperationalError):
        check_connection(session)


def test_a_closed_connection_is_refused(session):
    session.close()
    with pytest.raises(psycopg.OperationalError):
        check_connection(session)


def test_a_connection_with_something_unread_is_checked_the_pools_way(session):
    # A notification arrives unasked: readable, yet healthy. The full check reads it.
    session.execute("LISTEN pool_check_test")
    params = connection.get_connection_params()
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as notifier:
        notifier.execute("NOTIFY pool_check_test")
    readable, _, _ = select.select([session.fileno()], [], [], 5)
    assert readable
    check_connection(session)
    assert _last_query(session.info.backend_pid) == ""  # the pool's empty query
