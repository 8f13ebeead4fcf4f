"""Health, readiness, metrics, structured logs, presence and system checks: in process through
Django's test client, and end to end against live server processes (uvicorn on 127.0.0.1)."""

import asyncio
import json
import re
import signal
import tempfile
import urllib.error
import urllib.request

import pytest
import websockets
from django.core.management import call_command
from rest_framework_simplejwt.tokens import AccessToken

from notifications.close_codes import CloseCode
from notifications.operations import metrics
from notifications.operations.checks import check_channel_layer, check_database_pool
from notifications.operations.logs import redact
from notifications.realtime.presence import (
    _write_database,
    presence_count_for_user,
    presence_counts_for_users,
    tracker,
)
from tests.conftest import MEMORY_LAYER
from tests.support.live import LiveServer
from tests.support.redis import RedisServer
from tests.support.shared_db import live_database_url
from tests.support.ws import connect, open_socket


def http(url: str, *, token: str | None = None, timeout: float = 15) -> tuple[int, str]:
    request = urllib.request.Request(url)  # noqa: S310 - a local live server
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


OPEN_SOCKETS = 'notify_open_connections{transport="websocket"}'


def samples(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (no comments)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def eventually(check, timeout: float = 15, interval: float = 0.1):
    """Retry a blocking check in a thread until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)


# --- health and readiness --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the check replaces stale connections: no test atomic
def test_healthz_and_readyz_answer_with_latencies(client, channel_layer_kind):
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    for name in ("database", "channel_layer"):
        assert body["checks"][name]["ok"] is True
        assert body["checks"][name]["latency_ms"] >= 0


@pytest.mark.live
@pytest.mark.redis
def test_readyz_is_503_while_redis_is_down_and_200_when_it_returns():
    redis_server = RedisServer().start()
    server = LiveServer(env={"REDIS_URL": redis_server.url, "NOTIFICATIONS_READY_TIMEOUT": "2"})
    try:
        server.start()
        status, body = http(f"{server.http_url}/readyz")
        assert status == 200, body
        redis_server.stop()
        status, body = http(f"{server.http_url}/readyz")
        assert status == 503, body
        checks = json.loads(body)["checks"]
        assert checks["database"]["ok"] is True
        assert checks["channel_layer"]["ok"] is False and checks["channel_layer"]["error"]
        assert http(f"{server.http_url}/healthz")[0] == 200  # alive, just not ready
        redis_server.start()
        status, body = http(f"{server.http_url}/readyz")
        assert status == 200, body
    finally:
        server.stop()
        redis_server.stop()


# --- metrics access ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_need_an_allowed_address_or_the_token(client, settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1/32"]
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "notify_open_connections" in response.content.decode()
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    wrong = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    right = client.get(
        "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token"
    )
    assert right.status_code == 200
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


# --- bounded labels ----------------------------------------------------------------------------


def label_values(counter, label: str) -> set[str]:
    return {
        sample.labels[label]
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("memory_layer")
async def test_close_codes_a_client_chooses_collapse_into_other():
    for code in [*range(3900, 3950), *range(4100, 4150), 4999, 1001, 1000]:
        comm = await open_socket()
        await comm.send_input({"type": "websocket.disconnect", "code": code})
        await comm.wait(5)
    values = label_values(metrics.CONNECTIONS_CLOSED, "code")
    assert {"other", "1000", "1001"} <= values
    contract = {"1000", "4000", "4001", "4002", "4008", "4009", "4010", "4012"}
    standard = {str(code) for code in range(1000, 1016)}
    assert values <= contract | standard | {"other"}, values


def test_the_close_code_labels_know_every_code_of_the_contract():
    codes = {value for name, value in vars(CloseCode).items() if name.isupper()}
    assert codes == metrics.CONTRACT_CLOSE_CODES
    assert {metrics.close_code_label(code) for code in codes} == {str(code) for code in codes}


def test_auth_failure_reasons_mint_a_bounded_set_of_label_values(monkeypatch):
    monkeypatch.setattr(metrics, "_reason_labels", set())  # this process's others stay apart
    labels = {metrics.reason_label(f"refresh custom reason {n}") for n in range(200)}
    assert len(labels) == metrics.MAX_REASON_LABELS + 1
    assert "other" in labels
    assert metrics.reason_label("token_not_valid") == "other"  # the 33rd distinct one
    assert all(len(label) <= 48 for label in labels)


def test_logs_keep_a_service_keys_prefix_only_and_no_token():
    key = "rfk_Ab3dEf9h" + "x" * 35
    token = str(AccessToken())

    line = redact(f"publish failed for key={key}; Authorization: Bearer {token}")

    assert line == (
        "publish failed for key=rfk_Ab3dEf9h…[key redacted]; Authorization: Bearer [token redacted]"
    )


# --- end to end: metrics and the access log move with sockets, events and auth failures --------


@pytest.fixture
def metrics_server(transactional_db):
    with tempfile.TemporaryDirectory(prefix="reasonflow-prom-") as prom_dir:
        server = LiveServer(
            env={
                "DATABASE_URL": live_database_url(),
                "PROMETHEUS_MULTIPROC_DIR": prom_dir,
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
            }
        )
        server.start()
        yield server
        server.stop()


async def ws_open(url: str, token: str, **first_frame):
    ws = await websockets.connect(url, open_timeout=15)
    await ws.send(json.dumps({"token": token, **first_frame}))
    connected = json.loads(await asyncio.wait_for(ws.recv(), 15))
    assert connected["type"] == "connected", connected
    return ws


async def ws_close_code(ws) -> int:
    try:
        async with asyncio.timeout(15):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code


@pytest.mark.live
async def test_metrics_and_access_log_follow_sockets_events_and_auth_failures(
    metrics_server, make_user
):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(make_user)()
    staff = await sync_to_async(make_user)(is_staff=True)
    token, staff_token = str(AccessToken.for_user(user)), str(AccessToken.for_user(staff))
    url = f"{metrics_server.http_url}/metrics"

    def scrape() -> dict[str, float]:
        status, body = http(url)
        assert status == 200, body
        return samples(body)

    before = await asyncio.to_thread(scrape)
    assert before.get(OPEN_SOCKETS, 0) == 0

    ws = await ws_open(metrics_server.ws_url, token)
    now = await asyncio.to_thread(scrape)
    assert now[OPEN_SOCKETS] == 1
    assert now["notify_authenticated_users"] == 1
    assert now['notify_connections_accepted_total{transport="websocket"}'] == 1

    bad = await websockets.connect(metrics_server.ws_url, open_timeout=15)
    await bad.send(json.dumps({"token": token[:-4] + "AAAA"}))
    assert await ws_close_code(bad) == 4002
    await bad.close()
    no_token = await websockets.connect(metrics_server.ws_url, open_timeout=15)
    await no_token.send("not json")
    assert await ws_close_code(no_token) == 4001

    def publish() -> dict:
        request = urllib.request.Request(  # noqa: S310 - the local live server
            f"{metrics_server.http_url}/api/v1/notifications/test",
            data=json.dumps({"user": str(user.pk), "type": "draft_ready"}).encode(),
            headers={"Authorization": f"Bearer {staff_token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return json.loads(response.read())["event"]

    event = await asyncio.to_thread(publish)
    assert json.loads(await asyncio.wait_for(ws.recv(), 15)) == event
    resumed = await ws_open(metrics_server.ws_url, token, last_event_id=0)
    assert json.loads(await asyncio.wait_for(resumed.recv(), 15)) == event
    await ws.close()
    await resumed.close()

    def settled() -> dict | None:
        values = scrape()
        return values if values[OPEN_SOCKETS] == 0 else None

    after = await eventually(settled)
    assert after, "sockets never left the open-connections gauge"
    assert after["notify_authenticated_users"] == 0
    assert after['notify_connections_accepted_total{transport="websocket"}'] == 4
    closed = 'notify_connections_closed_total{code="%s",transport="websocket"}'  # sorted
    assert after[closed % 4002] == 1
    assert after[closed % 4001] == 1
    assert after[closed % 1000] == 2
    assert after['notify_auth_failures_total{reason="token_not_valid"}'] == 1
    assert after['notify_auth_failures_total{reason="first_frame_is_not_json"}'] == 1
    assert after['notify_events_published_total{type="draft_ready"}'] == 1
    assert after["notify_events_delivered_total"] == 1
    assert after["notify_delivery_latency_seconds_count"] == 1
    assert 0 < after["notify_delivery_latency_seconds_sum"] < 5
    assert after["notify_replays_total"] == 1
    assert after["notify_replayed_events_total"] == 1
    assert after["notify_gap_fills_total"] == 0
    assert after["notify_channel_layer_send_failures_total"] == 0

    metrics_server.stop()
    log = metrics_server.log()
    assert token not in log and staff_token not in log
    assert not re.search(r"eyJ[\w-]{4,}\.[\w-]{4,}\.", log), "a token reached the log"
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "notifications.access"]
    opened = [e for e in access if e["event"] == "ws_open"]
    closed = [e for e in access if e["event"] == "ws_close"]
    failed = [e for e in access if e["event"] == "ws_auth_failed"]
    assert [e["user_id"] for e in opened] == [str(user.pk)] * 2
    assert sorted(e["close_code"] for e in closed) == [1000, 1000, 4001, 4002]
    assert all(e["duration_s"] >= 0 for e in closed)
    assert {e["user_id"] for e in closed if e["close_code"] == 1000} == {str(user.pk)}
    assert sorted(e["reason"] for e in failed) == ["first_frame_is_not_json", "token_not_valid"]


# --- presence --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_database_presence_sums_live_processes_and_ignores_expired_ones(settings, user, other_user):
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    _write_database("a", {str(user.pk): 2, str(other_user.pk): 1}, 30)
    _write_database("b", {str(user.pk): 1}, 30)
    _write_database("crashed", {str(user.pk): 7}, -5)
    assert presence_counts_for_users(user_ids=[user.pk, other_user.pk]) == {
        user.pk: 3,
        other_user.pk: 1,
    }
    _write_database("a", None, 30)  # a heartbeat renews without rewriting
    _write_database("b", {}, 30)  # process b's last socket closed
    assert presence_count_for_user(user_id=user.pk) == 2


@pytest.mark.django_db(transaction=True)
async def test_sockets_of_this_process_show_in_presence(channel_layer_kind, user):
    from asgiref.sync import sync_to_async

    token = str(AccessToken.for_user(user))
    first, _ = await connect(token)
    second, _ = await connect(token)
    await tracker.publish()
    count = sync_to_async(presence_count_for_user)
    assert await count(user_id=user.pk) == 2
    await first.disconnect()
    await second.disconnect()
    await tracker.publish()
    assert await count(user_id=user.pk) == 0
    await tracker.stop()


@pytest.mark.live
@pytest.mark.redis
async def test_presence_spans_two_server_processes_and_forgets_a_killed_one(
    transactional_db, redis_url, make_user
):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(make_user)()
    token = str(AccessToken.for_user(user))
    database_url = await sync_to_async(live_database_url)()
    with tempfile.TemporaryDirectory(prefix="reasonflow-prom-") as prom_dir:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "NOTIFICATIONS_PRESENCE_TTL": "3",
            "PROMETHEUS_MULTIPROC_DIR": prom_dir,
        }
        a, b = LiveServer(env=env), LiveServer(env=env)
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        sockets = []
        try:
            sockets += [await ws_open(a.ws_url, token) for _ in range(2)]
            sockets += [await ws_open(b.ws_url, token)]

            def status(server: LiveServer) -> dict:
                code, body = http(f"{server.http_url}/api/v1/notifications/status", token=token)
                assert code == 200, body
                return json.loads(body)

            def connections_are(server: LiveServer, n: int):
                return lambda: status(server)["connections"] == n

            assert await eventually(connections_are(a, 3)), status(a)
            assert await eventually(connections_are(b, 3)), status(b)
            assert status(a)["last_event_id"] == 0
            gauge = samples(http(f"{a.http_url}/metrics")[1])[OPEN_SOCKETS]
            assert gauge == 3  # both processes' sockets, summed from the shared directory

            b.stop(sig=signal.SIGKILL)  # no goodbye: only expiry can clear its entries
            assert await eventually(connections_are(a, 2), timeout=10), status(a)
            gauge = samples(http(f"{a.http_url}/metrics")[1])[OPEN_SOCKETS]
            assert gauge == 2

            await sockets[0].close()
            assert await eventually(connections_are(a, 1)), status(a)
        finally:
            for ws in sockets:
                await ws.close()
            await asyncio.to_thread(a.stop)
            await asyncio.to_thread(b.stop)


# --- system checks ---------------------------------------------------------------------------


def test_checks_warn_about_settings_that_fail_in_production(settings, redis_url):
    from tests.conftest import redis_layer_config

    settings.DEBUG = False
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    assert [w.id for w in check_channel_layer(None)] == ["notifications.W001"]
    settings.CHANNEL_LAYERS = redis_layer_config(redis_url, group_expiry=90)
    settings.NOTIFICATIONS_GROUP_REFRESH = 60
    assert [w.id for w in check_channel_layer(None)] == ["notifications.W002"]
    settings.CHANNEL_LAYERS = redis_layer_config(redis_url, group_expiry=300)
    assert check_channel_layer(None) == []
    settings.DEBUG = True
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    assert check_channel_layer(None) == []


def test_a_pool_the_read_threads_would_fill_is_reported(settings):
    settings.NOTIFICATIONS_READ_THREADS = 4
    database = {**settings.DATABASES["default"], "OPTIONS": {"pool": {"max_size": 4}}}
    settings.DATABASES = {**settings.DATABASES, "default": database}
    assert [w.id for w in check_database_pool(None)] == ["notifications.W003"]
    database["OPTIONS"]["pool"]["max_size"] = 5
    assert check_database_pool(None) == []
    database["OPTIONS"] = {}
    assert check_database_pool(None) == []


def test_manage_py_check_reports_the_warnings(settings, capsys):
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    call_command("check")
    err = capsys.readouterr().err
    assert "notifications.W001" in err
