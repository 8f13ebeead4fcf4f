"""Settings read from the environment: the PostgreSQL connection pool (what a served process
does with it is in tests/notifications/realtime/test_server.py)."""

from tests.support.settings import settings_from_environment

POSTGRES = "postgres://postgres@127.0.0.1:5432/anything"


def test_the_pool_is_on_for_postgresql_by_default_and_sized_by_the_environment():
    loaded = settings_from_environment(
        DATABASE_URL=POSTGRES, DATABASE_POOL_MIN_SIZE="3", DATABASE_POOL_MAX_SIZE="12"
    )
    database = loaded.DATABASES["default"]
    assert database["OPTIONS"]["pool"] == {"min_size": 3, "max_size": 12, "timeout": 10.0}
    assert database["CONN_MAX_AGE"] == 0  # closing a connection returns it to the pool
    assert database["CONN_HEALTH_CHECKS"]  # the pool checks a connection before handing it out


def test_the_pool_can_be_turned_off_for_persistent_connections():
    loaded = settings_from_environment(
        DATABASE_URL=POSTGRES, DATABASE_POOL="false", DATABASE_CONN_MAX_AGE="30"
    )
    database = loaded.DATABASES["default"]
    assert "pool" not in database.get("OPTIONS", {})
    assert database["CONN_MAX_AGE"] == 30


def test_sqlite_has_no_pool():
    loaded = settings_from_environment(DATABASE_URL="sqlite:////tmp/reasonflow-settings.sqlite3")
    assert "pool" not in loaded.DATABASES["default"].get("OPTIONS", {})
