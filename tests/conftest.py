"""Shared fixtures: users and tokens, API clients, a real Redis, and the channel layer matrix."""

import uuid

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from reasonflow.users.throttles import refusals
from tests.support.redis import shared_redis_url

pytest_plugins = ["tests.support.hangs"]

PASSWORD = "correct-horse-battery-staple-42"


def pytest_collection_modifyitems(items):
    """The longest tests first: load tests, then those that start servers, then the rest. Under
    xdist (`make test`, a file per worker in the order of their first test) the files holding
    them then start first, and the workers finish together instead of one starting a
    minute-long file at the end while the others idle."""
    items.sort(key=_duration_class)


def _duration_class(item) -> int:
    if item.get_closest_marker("load"):
        return 0
    return 1 if item.get_closest_marker("live") else 2


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Users made in this process hash their passwords with one MD5 round, Django's advice
    for test runs: PBKDF2's million rounds cost 0.2 s of CPU per user or login, a third of the
    suite's CPU. Servers the tests start run production's settings, and the users they verify
    are their own (a server on the test database checks tokens, not these passwords)."""
    from django.contrib.auth import hashers

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    hashers.get_hashers.cache_clear()
    hashers.get_hashers_by_algorithm.cache_clear()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """The test process itself connects without the connection pool.

    Its threads (the test's, asgiref's, the realtime executor's) keep their connections for
    the session, the way tests have always run; with a pool those connections stay checked out,
    and a test that ends PostgreSQL backends would hand later tests dead ones. The servers the
    tests start (`serve` in a process of its own) use the pool as production does, and
    tests/notifications/realtime/test_server.py tests it there.
    """
    database = settings.DATABASES["default"]
    if database.get("OPTIONS", {}).pop("pool", None) is not None:
        database["CONN_MAX_AGE"] = settings.DATABASE_CONN_MAX_AGE


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, which it drops at the end. Threads of this process keep
    their connections to it for the session (the realtime read threads, asgiref's, the request
    threads), and PostgreSQL refuses to drop a database with sessions: they are ended first."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()


@pytest.fixture(autouse=True)
def fresh_cache(settings):
    """A cache of each test's own, empty: the suite logs in and registers many times from
    127.0.0.1, and the auth throttles must count each test from zero (at the real rates), never
    in a Redis that other runs share."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"test-{uuid.uuid4().hex}",
        }
    }
    refusals.clear()  # this process's memo of refused addresses (the throttle gate's)


@pytest.fixture(scope="session")
def redis_url():
    """A Redis URL that answers: REDIS_URL if it does, else a private redis-server."""
    url, server = shared_redis_url()
    yield url
    if server is not None:
        server.stop()


def redis_layer_config(url: str, **overrides) -> dict:
    """The project's Redis layer on `url`, with a prefix no other test shares."""
    config = {
        "hosts": [
            {
                "address": url,
                "socket_timeout": 15,
                "socket_connect_timeout": 3,
                "max_connections": 200,
                "timeout": 10,
            }
        ],
        "prefix": f"test-{uuid.uuid4().hex[:12]}",
        "capacity": 1000,
    }
    config.update(overrides)
    return {
        "default": {"BACKEND": "notifications.realtime.layers.RedisChannelLayer", "CONFIG": config}
    }


def pubsub_layer_config(url: str) -> dict:
    """channels-redis's pub/sub layer (the production default) on `url`, with its own prefix."""
    host = {"address": url, "socket_timeout": 15, "socket_connect_timeout": 3}
    return {
        "default": {
            "BACKEND": "notifications.realtime.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [host], "prefix": f"test-{uuid.uuid4().hex[:12]}"},
        }
    }


MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(params=["memory", "redis", "pubsub"])
def channel_layer_kind(request, settings):
    """Run the test on the in-memory layer and on both Redis layers (core and pub/sub)."""
    if request.param == "redis":
        settings.CHANNEL_LAYERS = redis_layer_config(request.getfixturevalue("redis_url"))
    elif request.param == "pubsub":
        settings.CHANNEL_LAYERS = pubsub_layer_config(request.getfixturevalue("redis_url"))
    else:
        settings.CHANNEL_LAYERS = MEMORY_LAYER
    return request.param


@pytest.fixture
def redis_layer(settings, redis_url):
    """The Redis channel layer only (for tests about Redis behaviour)."""
    settings.CHANNEL_LAYERS = redis_layer_config(redis_url)
    return settings.CHANNEL_LAYERS


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    return settings.CHANNEL_LAYERS


@pytest.fixture
def make_user(db):
    from reasonflow.users.models import User

    def make(email: str | None = None, **extra):
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        return User.objects.create_user(email=email, password=PASSWORD, **extra)

    return make


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def other_user(make_user):
    return make_user()


@pytest.fixture
def staff_user(make_user):
    return make_user(is_staff=True)


def access_token_for(user) -> str:
    # AccessToken (unlike RefreshToken) writes nothing, so async tests can mint one.
    return str(AccessToken.for_user(user))


@pytest.fixture
def access_token(user):
    return access_token_for(user)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def auth_client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
    return client
