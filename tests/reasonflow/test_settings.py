"""Settings read from the environment: the PostgreSQL connection pool."""

import time

import psycopg
import pytest
from django.conf import settings
from django.db import connection


def test_the_pool_is_on_for_postgresql_by_default():
    options = settings.DATABASES["default"].get("OPTIONS", {})
    if connection.vendor != "postgresql":
        assert "pool" not in options
        return
    assert options["pool"]["max_size"] == settings.DATABASE_POOL_MAX_SIZE
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"]  # the pool checks before use


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_pooled_connections_the_database_ended_are_replaced_before_use():
    # After a database restart every idle connection in the pool is dead; none may reach a
    # request (a 500) or a socket's read.
    if connection.vendor != "postgresql":
        pytest.skip("terminates server connections: PostgreSQL only")
    pooled = {_backend_pid()}
    connection.close()  # back to the pool
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]:
            time.sleep(0.05)
    for _ in range(settings.DATABASE_POOL_MIN_SIZE + 1):
        assert _backend_pid() not in pooled
        connection.close()
