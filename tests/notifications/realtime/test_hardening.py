"""Hostile clients and failing parts, in process: admission limits, rate limits, a database
outage during authentication, and generated first frames and REST bodies. (Revocation is the
users app's behaviour: tests/users/test_revocation.py.)"""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from notifications.events import sample_data
from notifications.publish import apublish_event
from tests.conftest import access_token_for
from tests.support.read_threads import close_read_thread_connections
from tests.support.ws import communicator, connect, expect_close, open_socket, receive_events

pytestmark = pytest.mark.django_db(transaction=True)

# --- failing parts -----------------------------------------------------------------------------


@pytest.mark.usefixtures("memory_layer")
async def test_a_connection_the_database_dropped_is_replaced_without_failing_a_socket(user):
    # The connect path skips Django's per-call health check and retries a read on a broken
    # connection instead: a database restart must not cost anyone a 4000.
    if connection.vendor != "postgresql":
        pytest.skip("terminates server connections: PostgreSQL only")
    token = access_token_for(user)

    def database_clock():
        with connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]

    def terminate_connections_opened_since(started):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                "datname = current_database() AND pid <> pg_backend_pid() AND backend_start > %s",
                [started],
            )
            return cursor.fetchone()[0]

    await close_read_thread_connections()  # so the connects below open new ones
    started = await sync_to_async(database_clock)()
    for _ in range(3):
        comm, _ = await connect(token)  # leaves connections open in the read threads
        await comm.disconnect()
    assert await sync_to_async(terminate_connections_opened_since)(started) >= 1
    for _ in range(6):
        comm, connected = await connect(token)
        assert connected["type"] == "connected"
        await comm.disconnect()


@pytest.mark.usefixtures("memory_layer")
async def test_a_database_outage_during_authentication_closes_4000_not_4002(user):
    token = access_token_for(user)

    def rename_users_table(source, target):
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE {connection.ops.quote_name(source)} "
                f"RENAME TO {connection.ops.quote_name(target)}"
            )

    await sync_to_async(rename_users_table)("users_user", "users_user_away")
    try:
        comm = await open_socket()
        await comm.send_json_to({"token": token})
        await expect_close(comm, 4000)
    finally:
        await sync_to_async(rename_users_table)("users_user_away", "users_user")
    comm, _ = await connect(token)  # and the same token works once the database is back
    await comm.disconnect()


# --- admission limits --------------------------------------------------------------------------


@pytest.mark.usefixtures("memory_layer")
async def test_unauthenticated_sockets_beyond_the_limit_are_refused(user, settings):
    settings.NOTIFICATIONS_MAX_PENDING = 3
    waiting = [await open_socket() for _ in range(3)]
    refused = communicator()
    assert not (await refused.connect(timeout=5))[0]
    await waiting[0].send_json_to({"token": access_token_for(user)})
    assert (await waiting[0].receive_json_from(timeout=5))["type"] == "connected"
    admitted = await open_socket()  # authenticating freed a place
    for comm in [*waiting, admitted]:
        await comm.disconnect()


@pytest.mark.usefixtures("memory_layer")
async def test_a_socket_beyond_the_per_user_cap_closes_4008(user, other_user, settings):
    settings.NOTIFICATIONS_MAX_CONNECTIONS_PER_USER = 2
    first = [(await connect(access_token_for(user)))[0] for _ in range(2)]
    extra = await open_socket()
    await extra.send_json_to({"token": access_token_for(user)})
    await expect_close(extra, 4008)
    theirs, _ = await connect(access_token_for(other_user))
    await first[0].disconnect()
    again, _ = await connect(access_token_for(user))  # a place freed up
    for comm in [first[1], theirs, again]:
        await comm.disconnect()


@pytest.mark.usefixtures("memory_layer")
async def test_a_flooding_client_is_closed_4008(user, settings):
    settings.NOTIFICATIONS_RATE_LIMIT = 1
    settings.NOTIFICATIONS_RATE_BURST = 4
    comm, _ = await connect(access_token_for(user))
    for _ in range(10):
        await comm.send_json_to({"type": "ping"})
    replies = []
    while True:
        output = await comm.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            assert output["code"] == 4008
            break
        replies.append(json.loads(output["text"]))
    assert replies == [{"type": "pong"}] * 3  # the first frame spent one of the burst


@pytest.mark.usefixtures("memory_layer")
async def test_a_client_within_the_rate_limit_is_never_closed(user, settings):
    settings.NOTIFICATIONS_RATE_LIMIT = 50
    settings.NOTIFICATIONS_RATE_BURST = 5
    comm, _ = await connect(access_token_for(user))
    for _ in range(20):
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
        await asyncio.sleep(0.03)
    await apublish_event(user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready"))
    assert [e["id"] for e in await receive_events(comm, 1)] == [1]
    await comm.disconnect()


# --- generated input ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
first_frames = st.one_of(
    st.builds(lambda v: {"text_data": json.dumps(v)}, json_values),
    st.builds(
        lambda token, extra: {"text_data": json.dumps({"token": token, **extra})},
        st.one_of(json_values, st.text(max_size=300)),
        st.dictionaries(st.sampled_from(["last_event_id", "type", "x"]), json_values, max_size=2),
    ),
    st.builds(lambda text: {"text_data": text}, st.text(min_size=1, max_size=200)),
    st.builds(lambda data: {"bytes_data": data}, st.binary(min_size=1, max_size=200)),
)


@pytest.mark.usefixtures("memory_layer")
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=first_frames)
def test_any_first_frame_gets_a_documented_close_code_and_no_empty_frame(frame):
    async def check():
        comm = await open_socket()
        await comm.send_to(**frame)
        output = await comm.receive_output(timeout=5)
        assert output["type"] == "websocket.close", output
        assert output["code"] in {4001, 4002, 4008, 4009}, output
        await comm.disconnect()

    async_to_sync(check)()


rest_bodies = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(
            ["email", "password", "refresh", "user", "type", "data", "after", "limit", "token"]
        ),
        json_values,
        max_size=4,
    ),
)
REST_WRITES = [
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/auth/password",
    "/api/v1/notifications/test",
]


@pytest.mark.usefixtures("memory_layer")
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(REST_WRITES), body=rest_bodies, as_staff=st.booleans())
def test_any_rest_body_gets_a_client_error_never_a_server_error(
    staff_user, user, path, body, as_staff
):
    client = APIClient()
    client.force_authenticate(staff_user if as_staff else user)
    response = client.post(path, json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (path, body, response.content)
    assert response["Content-Type"].startswith("application/json")
    assert b"Traceback" not in response.content
