"""Throttles of the auth endpoints: 429 with Retry-After, failures per account and per address,
rates from settings at request time, counts shared through the Redis cache."""

import asyncio
import json
import pickle
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_started
from django.db import connection
from rest_framework.test import APIClient

from reasonflow.users.models import User
from reasonflow.users.throttles import Refusals, ThrottleGate, refusals
from tests.conftest import PASSWORD
from tests.support.asgi import http_scope
from tests.support.redis import RedisServer, SentinelServer, free_port
from tests.support.settings import settings_from_environment

pytestmark = pytest.mark.django_db

STRONG = "quiet-lantern-orbit-73"


def login(client, email, password, address="127.0.0.1", **headers):
    return client.post(
        "/api/v1/auth/login",
        {"email": email, "password": password},
        format="json",
        REMOTE_ADDR=address,
        **headers,
    )


def assert_throttled(response):
    assert response.status_code == 429, response.content
    assert "detail" in response.json()
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600


@pytest.fixture
def password_checks():
    """Every authenticate() that checked (hashed) a password and failed."""
    failures = []

    def count(sender, credentials, **kwargs):
        failures.append(credentials)

    user_login_failed.connect(count)
    yield failures
    user_login_failed.disconnect(count)


# --- login --------------------------------------------------------------------------------------


def test_forty_wrong_passwords_get_429_from_the_eleventh_without_hashing(
    api_client, user, password_checks, settings
):
    # The default rates (settings.py): 10 failures a minute per account and per address.
    assert settings.THROTTLE_RATE_LOGIN == "10/min"
    statuses = [login(api_client, user.email, f"wrong-{n}").status_code for n in range(40)]
    first = statuses.index(429) + 1
    print(f"\n40 wrong passwords, one account, one address: first 429 at attempt {first}")
    assert first == 11
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    # The 30 refused attempts never reached a password check.
    assert len(password_checks) == 10
    assert_throttled(login(api_client, user.email, PASSWORD))


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_storm_checks_no_more_passwords_than_the_rate(user, settings, password_checks):
    # An attempt counts while its password is being hashed, so the attempts that arrive
    # meanwhile already see it (counting only afterwards let every one of them through).
    settings.THROTTLE_RATE_LOGIN = "5/min"
    threads, rounds = 16, 3
    start = threading.Barrier(threads)

    def storm(n):
        try:
            start.wait(timeout=30)
            client = APIClient()
            return [login(client, user.email, f"wrong-{n}").status_code for _ in range(rounds)]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        statuses = [status for batch in pool.map(storm, range(threads)) for status in batch]
    assert set(statuses) == {401, 429}
    checked = len(password_checks)
    print(f"\n{threads} threads x {rounds} wrong passwords at 5/min: {checked} checked")
    # Counting is one step per process (a lock around the cache read and write): exact.
    assert statuses.count(401) == checked == 5


def test_login_failures_are_counted_per_account_across_addresses(
    api_client, user, settings, password_checks
):
    settings.THROTTLE_RATE_LOGIN = "3/min"
    for n in range(3):
        assert login(api_client, user.email, "wrong", address=f"10.0.0.{n}").status_code == 401
    # Any case of the address names the same account.
    assert_throttled(login(api_client, user.email.upper(), PASSWORD, address="10.0.0.9"))
    assert len(password_checks) == 3
    other = User.objects.create_user(email="other@example.com", password=PASSWORD)
    assert login(api_client, other.email, PASSWORD, address="10.0.0.9").status_code == 200


def test_login_failures_are_counted_per_address_across_accounts(api_client, user, settings):
    settings.THROTTLE_RATE_LOGIN = "3/min"
    for n in range(3):
        assert login(api_client, f"nobody-{n}@example.com", "wrong", "10.1.1.1").status_code == 401
    assert_throttled(login(api_client, user.email, PASSWORD, address="10.1.1.1"))
    assert login(api_client, user.email, PASSWORD, address="10.1.1.2").status_code == 200


def test_successful_logins_are_not_counted(api_client, user, settings):
    settings.THROTTLE_RATE_LOGIN = "2/min"
    for _ in range(4):
        assert login(api_client, user.email, PASSWORD).status_code == 200
    assert login(api_client, user.email, "wrong").status_code == 401
    assert login(api_client, user.email, PASSWORD).status_code == 200
    assert login(api_client, user.email, "wrong").status_code == 401
    assert_throttled(login(api_client, user.email, PASSWORD))


def test_a_spoofed_x_forwarded_for_does_not_escape_the_address_throttle(api_client, settings):
    settings.THROTTLE_RATE_LOGIN = "2/min"
    for n in range(2):
        response = login(
            api_client, f"nobody-{n}@example.com", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}"
        )
        assert response.status_code == 401
    assert_throttled(
        login(api_client, "nobody-9@example.com", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.9")
    )


def test_ipv6_clients_are_counted_per_64(api_client, settings):
    settings.THROTTLE_RATE_LOGIN = "2/min"
    for n, address in enumerate(["2001:db8:1:2::1", "2001:db8:1:2:ffff::7"]):
        assert login(api_client, f"nobody-{n}@example.com", "wrong", address).status_code == 401
    assert_throttled(login(api_client, "nobody-9@example.com", "wrong", "2001:db8:1:2::99"))
    assert login(api_client, "nobody-9@example.com", "wrong", "2001:db8:1:3::1").status_code == 401


def test_retry_after_says_when_a_login_is_allowed_again(api_client, user, settings):
    settings.THROTTLE_RATE_LOGIN = "1/s"
    # Both logins must land in one second for the rate to refuse the second: a machine too busy
    # for that gets another try, with the counts from zero.
    for _ in range(3):
        cache.clear()
        refusals.clear()
        began = time.monotonic()
        assert login(api_client, user.email, "wrong").status_code == 401
        response = login(api_client, user.email, PASSWORD)
        if time.monotonic() - began < 0.9:
            break
    assert_throttled(response)
    assert response["Retry-After"] == "1"
    time.sleep(1.05)
    assert login(api_client, user.email, PASSWORD).status_code == 200


@pytest.mark.parametrize("email", [["x@example.com"], {"a": 1}, None, 7])
def test_a_login_with_an_email_that_is_not_a_string_is_a_client_error(api_client, settings, email):
    settings.THROTTLE_RATE_LOGIN = "1/min"
    response = api_client.post(
        "/api/v1/auth/login", {"email": email, "password": "x"}, format="json"
    )
    assert response.status_code in {400, 401}
    assert response.json()


# --- register, password change, refresh ---------------------------------------------------------


def register(client, email, address="127.0.0.1"):
    return client.post(
        "/api/v1/auth/register",
        {"email": email, "password": STRONG},
        format="json",
        REMOTE_ADDR=address,
    )


def test_registrations_are_throttled_per_address(api_client, settings):
    settings.THROTTLE_RATE_REGISTER = "3/hour"
    for n in range(3):
        assert register(api_client, f"new-{n}@example.com").status_code == 201
    assert_throttled(register(api_client, "new-3@example.com"))
    assert not User.objects.filter(email="new-3@example.com").exists()
    assert register(api_client, "new-4@example.com", address="10.2.2.2").status_code == 201


def test_wrong_current_passwords_are_throttled_per_user(user, other_user, settings):
    settings.THROTTLE_RATE_PASSWORD = "2/hour"

    def change(who, current):
        client = APIClient()
        client.force_authenticate(who)
        return client.post(
            "/api/v1/auth/password",
            {"current_password": current, "new_password": STRONG},
            format="json",
        )

    assert change(user, "wrong").status_code == 400
    assert change(user, "wrong").status_code == 400
    assert_throttled(change(user, PASSWORD))
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert change(other_user, PASSWORD).status_code == 200


def test_password_changes_that_succeed_are_not_counted(user, settings):
    settings.THROTTLE_RATE_PASSWORD = "1/hour"
    client = APIClient()
    client.force_authenticate(user)
    for current, new in [(PASSWORD, STRONG), (STRONG, PASSWORD)]:
        response = client.post(
            "/api/v1/auth/password",
            {"current_password": current, "new_password": new},
            format="json",
        )
        assert response.status_code == 200


def test_refreshes_are_throttled_per_address(api_client, settings):
    settings.THROTTLE_RATE_REFRESH = "2/min"
    for _ in range(2):
        response = api_client.post("/api/v1/auth/refresh", {"refresh": "garbage"}, format="json")
        assert response.status_code == 401
    assert_throttled(api_client.post("/api/v1/auth/refresh", {"refresh": "garbage"}, format="json"))
    other = api_client.post(
        "/api/v1/auth/refresh", {"refresh": "garbage"}, format="json", REMOTE_ADDR="10.3.3.3"
    )
    assert other.status_code == 401


# --- where the counts live ----------------------------------------------------------------------


def redis_cache(location: str, **options) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2, **options},
        }
    }


def throttle_counts(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Failures per throttle key, read straight from Redis (as another process would)."""
    return {
        key.decode().split(":", 2)[2]: len(pickle.loads(client.get(key)))  # noqa: S301
        for key in client.scan_iter(f"{prefix}:*")
    }


@pytest.mark.redis
def test_failures_are_counted_in_redis_where_every_process_sees_them(
    api_client, user, settings, redis_url
):
    settings.CACHES = redis_cache(redis_url)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    settings.THROTTLE_RATE_LOGIN = "2/min"
    other_process = redis.Redis.from_url(redis_url)
    try:
        for _ in range(2):
            assert login(api_client, user.email, "wrong").status_code == 401
        counts = throttle_counts(other_process, prefix)
        assert sorted(counts.values()) == [2, 2]
        assert {key.split("_", 2)[2].split("_")[0] for key in counts} == {"account", "address"}
        assert_throttled(login(api_client, user.email, PASSWORD))
        # What another process does to the counts, this one sees.
        other_process.delete(*other_process.scan_iter(f"{prefix}:*"))
        assert login(api_client, user.email, PASSWORD).status_code == 200
    finally:
        keys = list(other_process.scan_iter(f"{prefix}:*"))
        if keys:
            other_process.delete(*keys)
        other_process.close()


def test_a_cache_outage_answers_503_not_500(api_client, user, settings):
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{free_port()}/0")
    response = login(api_client, user.email, PASSWORD)
    assert response.status_code == 503
    assert response.json() == {"detail": "The service is temporarily unavailable, try again later."}


# --- settings from the environment ---------------------------------------------------------------


def test_throttle_rates_come_from_the_environment():
    loaded = settings_from_environment(
        THROTTLE_RATE_LOGIN="5/hour",
        THROTTLE_RATE_REGISTER="7/day",
        THROTTLE_RATE_PASSWORD="3/min",
        THROTTLE_RATE_REFRESH="100/s",
    )
    rates = [
        loaded.THROTTLE_RATE_LOGIN,
        loaded.THROTTLE_RATE_REGISTER,
        loaded.THROTTLE_RATE_PASSWORD,
        loaded.THROTTLE_RATE_REFRESH,
    ]
    assert rates == ["5/hour", "7/day", "3/min", "100/s"]
    defaults = settings_from_environment(THROTTLE_RATE_LOGIN="")
    assert defaults.THROTTLE_RATE_LOGIN == "10/min"


@pytest.mark.parametrize("rate", ["10", "10/mango", "0/min", "ten/min", "-1/min", "10/min/2"])
def test_a_malformed_throttle_rate_refuses_to_start(rate):
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_RATE_REFRESH"):
        settings_from_environment(THROTTLE_RATE_REFRESH=rate)


def test_the_cache_is_redis_when_redis_url_is_set_and_local_memory_otherwise():
    loaded = settings_from_environment(REDIS_URL="redis://cache.internal:6379/2")
    cache = loaded.CACHES["default"]
    assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache["LOCATION"] == "redis://cache.internal:6379/2"
    local = settings_from_environment(REDIS_URL="")
    assert local.CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


@pytest.mark.redis
def test_with_sentinel_only_the_counts_live_in_the_master_it_names(api_client, user, settings):
    master = RedisServer().start()
    sentinel = SentinelServer(master).start()
    try:
        loaded = settings_from_environment(
            REDIS_URL="",
            REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}",
            REDIS_SENTINEL_MASTER=sentinel.master_name,
        )
        settings.CACHES = loaded.CACHES
        settings.THROTTLE_RATE_LOGIN = "1/min"
        assert login(api_client, user.email, "wrong").status_code == 401
        assert_throttled(login(api_client, user.email, PASSWORD))
        counts = throttle_counts(redis.Redis.from_url(master.url), "reasonflow")
        assert sorted(counts.values()) == [1, 1]
    finally:
        sentinel.stop()
        master.stop()


# --- the gate: refused addresses answered before Django ------------------------------------


async def asgi_post(path: str, body: dict, client: tuple[str, int]) -> tuple[int, dict, dict]:
    """POST through the project's ASGI application as the server would, from `client`."""
    from reasonflow.asgi import application

    payload = json.dumps(body).encode()
    scope = http_scope(
        path, client=client, headers=[(b"content-length", str(len(payload)).encode())]
    )
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": payload, "more_body": False})
    start = await communicator.receive_output(10)
    content = await communicator.receive_output(10)
    await communicator.wait(10)
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, json.loads(content["body"])


@pytest.fixture
def django_requests():
    """Every request that reached Django."""
    seen = []

    def count(sender, **kwargs):
        seen.append(kwargs.get("scope", {}).get("path"))

    request_started.connect(count)
    yield seen
    request_started.disconnect(count)


@pytest.mark.django_db(transaction=True)
async def test_a_refused_address_is_answered_before_django_until_its_refusal_ends(
    settings, django_requests
):
    settings.THROTTLE_RATE_LOGIN = "2/min"
    attacker, other = ("203.0.113.7", 40000), ("198.51.100.9", 40000)
    body = {"email": "nobody@example.com", "password": "wrong"}
    statuses = [(await asgi_post("/api/v1/auth/login", body, attacker))[0] for _ in range(3)]
    assert statuses == [401, 401, 429], statuses  # DRF's throttle refused the third: remembered
    assert len(django_requests) == 3

    status, headers, content = await asgi_post("/api/v1/auth/login", body, attacker)
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    assert content["detail"].startswith("Request was throttled.")
    assert len(django_requests) == 3  # the gate answered: Django never saw it

    # Another address, and the same address on an endpoint it was not refused on, go through.
    elsewhere = {"email": "somebody-else@example.com", "password": "wrong"}
    assert (await asgi_post("/api/v1/auth/login", elsewhere, other))[0] == 401
    assert (await asgi_post("/api/v1/auth/refresh", {"refresh": "x"}, attacker))[0] == 401
    assert len(django_requests) == 5

    # When the refusal ends the address is Django's again.
    for key in list(refusals._until):
        refusals._until[key] = time.time() - 1
    assert (await asgi_post("/api/v1/auth/login", body, attacker))[0] == 429
    assert len(django_requests) == 6


async def test_the_gate_delays_refusals_but_never_more_than_max_delayed_at_once():
    passed = []

    async def app(scope, receive, send):
        passed.append(scope["path"])

    gate = ThrottleGate(app, delay=0.3, max_delayed=2)
    refusals.remember("login_address", "203.0.113.7", time.time() + 30)
    scope = {"type": "http", "path": "/api/v1/auth/login", "client": ("203.0.113.7", 1)}
    sent: list[tuple[float, dict]] = []

    async def send(message):
        sent.append((time.monotonic(), message))

    started = time.monotonic()
    await asyncio.gather(*(gate(dict(scope), None, send) for _ in range(3)))
    starts = sorted(
        at - started for at, message in sent if message["type"] == "http.response.start"
    )
    assert len(starts) == 3 and passed == []
    assert starts[0] < 0.1  # the third found two waiting already: answered at once
    assert all(0.3 <= at < 1.0 for at in starts[1:])
    await gate({"type": "http", "path": "/healthz", "client": ("203.0.113.7", 1)}, None, send)
    assert passed == ["/healthz"]  # a path with no address throttle is never gated


def test_the_memo_of_refusals_is_bounded():
    memo = Refusals(limit=3)
    for n in range(5):
        memo.remember("login_address", f"10.0.0.{n}", time.time() + 60)
    assert sorted(ident for _, ident in memo._until) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert memo.wait("login_address", "10.0.0.0", time.time()) is None
    assert 59 < memo.wait("login_address", "10.0.0.4", time.time()) <= 60
