"""What telemetry records as sockets open, authenticate, fail and close, and as events are
delivered: the Prometheus metrics of this process and the access log's lines. In process,
through the consumer on the in-memory layer (tests/notifications/operations covers the same
figures as /metrics serves them from live server processes)."""

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY

from notifications.realtime import telemetry
from notifications.realtime.connections import REFUSED_RATE, registry
from tests.conftest import access_token_for
from tests.support.ws import connect, expect_close, open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def access_lines(caplog, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "notifications.access" and r.event == event]


async def test_a_socket_is_counted_while_open_and_by_its_close_code_when_closed(user, caplog):
    caplog.set_level(logging.INFO, logger="notifications.access")
    opened, accepted = (
        metric("notify_open_connections", transport="websocket"),
        metric("notify_connections_accepted_total", transport="websocket"),
    )
    closed_1000 = metric("notify_connections_closed_total", transport="websocket", code="1000")

    comm, _ = await connect(access_token_for(user))
    assert metric("notify_open_connections", transport="websocket") == opened + 1
    assert metric("notify_connections_accepted_total", transport="websocket") == accepted + 1
    assert metric("notify_authenticated_users") == len(registry.by_user) >= 1
    [line] = access_lines(caplog, "ws_open")
    assert line.user_id == str(user.id)

    await comm.disconnect(code=1000)
    assert metric("notify_open_connections", transport="websocket") == opened
    assert (
        metric("notify_connections_closed_total", transport="websocket", code="1000")
        == closed_1000 + 1
    )
    [line] = access_lines(caplog, "ws_close")
    assert (line.user_id, line.close_code) == (str(user.id), 1000)
    assert line.duration_s >= 0


async def test_an_auth_failure_is_counted_and_logged_by_reason_without_the_token(user, caplog):
    caplog.set_level(logging.INFO, logger="notifications.access")
    failures = metric("notify_auth_failures_total", reason="token_not_valid")
    closed_4002 = metric("notify_connections_closed_total", transport="websocket", code="4002")
    token = access_token_for(user)[:-4] + "AAAA"

    comm = await open_socket()
    await comm.send_json_to({"token": token})
    await expect_close(comm, 4002)

    assert metric("notify_auth_failures_total", reason="token_not_valid") == failures + 1
    assert (
        metric("notify_connections_closed_total", transport="websocket", code="4002")
        == closed_4002 + 1
    )
    [line] = access_lines(caplog, "ws_auth_failed")
    assert line.reason == "token_not_valid"
    [line] = access_lines(caplog, "ws_close")
    assert (line.user_id, line.close_code) == (None, 4002)
    assert token not in caplog.text
    assert access_lines(caplog, "ws_open") == []


CLIENT = {"type": "websocket", "client": ("203.0.113.7", 50000), "headers": []}


def test_every_refusal_is_counted_and_logged_at_most_once_an_interval(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="notifications.access")
    monkeypatch.setattr(telemetry, "_refusals_logged_at", {})  # this test's own log window
    monkeypatch.setattr(telemetry, "_refusals_unlogged", {})
    monkeypatch.setattr(telemetry, "REFUSAL_LOG_INTERVAL", 0.2)
    refused = metric("notify_connections_refused_total", reason=REFUSED_RATE)

    for _ in range(5):
        telemetry.socket_refused(REFUSED_RATE, CLIENT)
    assert metric("notify_connections_refused_total", reason=REFUSED_RATE) == refused + 5
    assert [line.count for line in access_lines(caplog, "ws_refused")] == [1]

    time.sleep(0.25)
    telemetry.socket_refused(REFUSED_RATE, CLIENT)
    lines = access_lines(caplog, "ws_refused")
    assert [line.count for line in lines] == [1, 5]  # the last line stands for 4 unlogged + 1
    assert {(line.reason, line.client) for line in lines} == {(REFUSED_RATE, "203.0.113.7")}


def test_a_delivery_is_counted_and_its_latency_observed_when_the_publish_time_is_known():
    delivered = metric("notify_events_delivered_total")
    observed = metric("notify_delivery_latency_seconds_count")
    total = metric("notify_delivery_latency_seconds_sum")

    telemetry.event_delivered({"event_id": 1, "published_at": time.time() - 0.2})
    assert metric("notify_delivery_latency_seconds_count") == observed + 1
    assert metric("notify_delivery_latency_seconds_sum") - total >= 0.2

    telemetry.event_delivered({"event_id": 2})  # no publish time: counted, not observed
    telemetry.event_delivered({"event_id": 3, "published_at": time.time() + 60})  # clock skew
    assert metric("notify_events_delivered_total") == delivered + 3
    assert metric("notify_delivery_latency_seconds_count") == observed + 2
    assert metric("notify_delivery_latency_seconds_sum") - total < 1  # skew observed as 0


async def test_a_fan_out_is_counted_once_the_event_loop_turns_as_one_by_one():
    delivered = metric("notify_events_delivered_total")
    observed = metric("notify_delivery_latency_seconds_count")
    under_5_ms = metric("notify_delivery_latency_seconds_bucket", le="0.005")
    now = time.time()
    messages = [{"event_id": 1, "published_at": now - 0.001 * (index % 20)} for index in range(999)]

    for message in [*messages, {"event_id": 1}]:  # one callback: a fan-out to 1,000 sockets
        telemetry.event_delivered(message)
    assert metric("notify_events_delivered_total") == delivered  # nothing yet
    await asyncio.sleep(0)

    assert metric("notify_events_delivered_total") == delivered + 1000
    assert metric("notify_delivery_latency_seconds_count") == observed + 999
    fast = sum(now - message["published_at"] <= 0.005 for message in messages)
    # Each latency is measured when delivered (a little later than `now`): at most as many.
    assert 0 < metric("notify_delivery_latency_seconds_bucket", le="0.005") - under_5_ms <= fast


def test_replays_count_resumes_and_the_events_they_sent():
    replays, events = metric("notify_replays_total"), metric("notify_replayed_events_total")
    telemetry.replayed(3)
    telemetry.replayed(0)
    assert metric("notify_replays_total") == replays + 2
    assert metric("notify_replayed_events_total") == events + 3
