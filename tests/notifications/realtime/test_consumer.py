"""The WebSocket consumer through reasonflow.asgi.application: every close code of the contract,
isolation, fan-out, resume, on the in-memory and the Redis channel layer."""

import asyncio
import contextlib
import json
from datetime import timedelta

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from notifications.delivery import aflush_deliveries
from notifications.events import EventType
from notifications.models import Event
from notifications.publish import user_group_name
from tests.conftest import access_token_for
from tests.support.ws import (
    communicator,
    connect,
    expect_close,
    group_members,
    open_socket,
    publish,
    receive_events,
    wait_until,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_kind"),
]


def signed(claims: dict, *, key=None, algorithm="HS256") -> str:
    from django.conf import settings

    return jwt.encode(claims, key or settings.SIMPLE_JWT["SIGNING_KEY"], algorithm=algorithm)


def access_claims(user, **overrides) -> dict:
    token = AccessToken.for_user(user)
    return {**token.payload, **overrides}


# --- the happy path ----------------------------------------------------------------------------


async def test_connect_answers_connected_with_the_users_id(user):
    comm, connected = await connect(access_token_for(user))
    assert connected["user_id"] == str(user.id)
    assert connected["last_event_id"] == 0
    assert connected["recovered"] is True
    assert connected["expires_at"].endswith("+00:00")
    await comm.disconnect()


async def test_trailing_slash_is_accepted(user):
    comm = communicator(path="/api/v1/notifications/ws/")
    assert (await comm.connect(timeout=5))[0]
    await comm.send_json_to({"token": access_token_for(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "connected"
    await comm.disconnect()


async def test_group_is_joined_before_connected_is_sent(user):
    comm, _ = await connect(access_token_for(user))
    assert len(await group_members(user.id)) == 1
    await comm.disconnect()
    assert await group_members(user.id) == set()


async def test_a_consumer_cancelled_mid_connection_still_leaves_its_group(user):
    # A stopping server (or a communicator that stops waiting) cancels the application
    # instead of sending websocket.disconnect: its member must not stay in the group (on
    # Redis it would until group_expiry, taking every event of the user meanwhile).
    comm, _ = await connect(access_token_for(user))
    assert len(await group_members(user.id)) == 1
    comm.future.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await comm.future
    assert await wait_until(lambda: _group_empty(user.id), timeout=10)


async def test_ping_answers_pong_and_unknown_frames_are_ignored(user):
    comm, _ = await connect(access_token_for(user))
    await comm.send_to(text_data="not json at all")
    await comm.send_to(bytes_data=b"\x00\x01")
    await comm.send_json_to([1, 2, 3])
    await comm.send_json_to({"type": "subscribe", "to": "everything"})
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()


async def test_event_reaches_the_user_with_the_exact_envelope(user):
    comm, _ = await connect(access_token_for(user))
    event = await publish(user, EventType.EMAIL_RECEIVED)
    [received] = await receive_events(comm, 1)
    assert received == {
        "id": 1,
        "type": "email_received",
        "user_id": str(user.id),
        "data": event.data,
        "timestamp": event.created_at.isoformat(timespec="microseconds"),
    }
    assert set(received["data"]) == {"email_id", "subject", "sender"}
    await comm.disconnect()


async def test_users_only_receive_their_own_events(user, other_user):
    mine, _ = await connect(access_token_for(user))
    theirs, _ = await connect(access_token_for(other_user))
    await publish(other_user)
    await publish(user)
    [received] = await receive_events(mine, 1)
    assert received["user_id"] == str(user.id)
    [other_received] = await receive_events(theirs, 1)
    assert other_received["user_id"] == str(other_user.id)
    assert await mine.receive_nothing(timeout=0.3)
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


async def test_every_connection_of_a_user_receives_every_event(user):
    sockets = [(await connect(access_token_for(user)))[0] for _ in range(3)]
    for _ in range(5):
        await publish(user)
    for comm in sockets:
        assert [e["id"] for e in await receive_events(comm, 5)] == [1, 2, 3, 4, 5]
        await comm.disconnect()


async def test_second_auth_frame_never_switches_identity(user, other_user):
    comm, _ = await connect(access_token_for(user))
    await comm.send_json_to({"token": access_token_for(other_user)})
    await publish(other_user)
    await publish(user)
    [received] = await receive_events(comm, 1)
    assert received["user_id"] == str(user.id)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


# --- close codes -------------------------------------------------------------------------------


async def test_foreign_origin_is_refused_before_any_frame():
    comm = communicator(origin=b"http://evil.example.com")
    connected, _ = await comm.connect(timeout=5)
    assert not connected  # a close before accept: daphne answers the upgrade with HTTP 403


async def test_missing_origin_is_allowed_for_non_browser_clients(user):
    comm = communicator(origin=None)
    assert (await comm.connect(timeout=5))[0]
    await comm.send_json_to({"token": access_token_for(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "connected"
    await comm.disconnect()


async def test_no_first_frame_before_the_deadline_closes_4001(settings):
    settings.NOTIFICATIONS_AUTH_TIMEOUT = 0.2
    comm = await open_socket()
    await expect_close(comm, 4001, timeout=3)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"bytes_data": b'{"token": "x"}'}, id="binary"),
        pytest.param({"text_data": "{not json"}, id="not-json"),
        pytest.param({"text_data": "[" * 100_000 + "]" * 100_000}, id="too-deep"),
        pytest.param({"text_data": '["token"]'}, id="not-an-object"),
        pytest.param({"text_data": '"token"'}, id="a-string"),
        pytest.param({"text_data": "{}"}, id="no-token-key"),
        pytest.param({"text_data": '{"token": null}'}, id="null-token"),
        pytest.param({"text_data": '{"token": 12345}'}, id="number-token"),
        pytest.param({"text_data": '{"token": ""}'}, id="empty-token"),
        pytest.param({"text_data": '{"token": "   "}'}, id="blank-token"),
        pytest.param({"text_data": '{"token": {"a": 1}}'}, id="object-token"),
    ],
)
async def test_unusable_first_frame_closes_4001(frame, settings):
    settings.NOTIFICATIONS_MAX_FRAME_BYTES = 1024 * 1024
    comm = await open_socket()
    await comm.send_to(**frame)
    await expect_close(comm, 4001)


@pytest.mark.parametrize("last_event_id", [-1, "3", 1.5, True, [1]])
async def test_malformed_last_event_id_closes_4001(user, last_event_id):
    comm = await open_socket()
    await comm.send_json_to({"token": access_token_for(user), "last_event_id": last_event_id})
    await expect_close(comm, 4001)


async def test_oversized_frame_closes_4009_before_auth(settings):
    comm = await open_socket()
    await comm.send_to(
        text_data=json.dumps({"token": "x" * settings.NOTIFICATIONS_MAX_FRAME_BYTES})
    )
    await expect_close(comm, 4009)


async def test_oversized_frame_closes_4009_after_auth(user, settings):
    comm, _ = await connect(access_token_for(user))
    await comm.send_to(bytes_data=b"x" * (settings.NOTIFICATIONS_MAX_FRAME_BYTES + 1))
    await expect_close(comm, 4009)


async def invalid_token_cases(user, other_user):
    claims = access_claims(user)
    expired = AccessToken.for_user(user)
    expired.set_exp(from_time=timezone.now() - timedelta(hours=1), lifetime=timedelta(minutes=1))
    refresh = await sync_to_async(RefreshToken.for_user)(user)
    blacklisted = await sync_to_async(RefreshToken.for_user)(user)
    await sync_to_async(blacklisted.blacklist)()
    none_header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    none_body = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return {
        "garbage": "not-a-jwt",
        "truncated": access_token_for(user)[:-10],
        "bad-signature": signed(claims, key="another-secret-key-of-sufficient-length-123"),
        "alg-none": f"{none_header}.{none_body}.",
        "wrong-algorithm": signed(claims, algorithm="HS512"),
        "expired": str(expired),
        "refresh-token": str(refresh),
        "blacklisted-refresh": str(blacklisted),
        "no-user-claim": signed({k: v for k, v in claims.items() if k != "user_id"}),
        "user-id-not-uuid": signed({**claims, "user_id": "abc"}),
        "user-id-object": signed({**claims, "user_id": {"id": str(user.id)}}),
        "user-id-list": signed({**claims, "user_id": [1]}),
        "unknown-user": signed({**claims, "user_id": "00000000-0000-4000-8000-000000000000"}),
    }


INVALID_TOKEN_CASES = [
    "garbage",
    "truncated",
    "bad-signature",
    "alg-none",
    "wrong-algorithm",
    "expired",
    "refresh-token",
    "blacklisted-refresh",
    "no-user-claim",
    "user-id-not-uuid",
    "user-id-object",
    "user-id-list",
    "unknown-user",
]


@pytest.mark.parametrize("case", INVALID_TOKEN_CASES)
async def test_invalid_token_closes_4002(user, other_user, case):
    token = (await invalid_token_cases(user, other_user))[case]
    comm = await open_socket()
    await comm.send_json_to({"token": token})
    await expect_close(comm, 4002)


async def test_inactive_user_closes_4002(user):
    token = access_token_for(user)
    user.is_active = False
    await sync_to_async(user.save)()
    comm = await open_socket()
    await comm.send_json_to({"token": token})
    await expect_close(comm, 4002)


async def test_deleted_user_closes_4002(user):
    token = access_token_for(user)
    await sync_to_async(user.delete)()
    comm = await open_socket()
    await comm.send_json_to({"token": token})
    await expect_close(comm, 4002)


async def test_token_from_before_a_password_change_closes_4002(user):
    token = access_token_for(user)
    user.set_password("a-brand-new-password-99")
    await sync_to_async(user.save)()
    comm = await open_socket()
    await comm.send_json_to({"token": token})
    await expect_close(comm, 4002)


async def test_channel_layer_failure_closes_4000_without_detail(user, settings):
    from tests.conftest import redis_layer_config
    from tests.support.redis import free_port

    settings.CHANNEL_LAYERS = redis_layer_config(f"redis://127.0.0.1:{free_port()}/0")
    comm = await open_socket()
    await comm.send_json_to({"token": access_token_for(user)})
    await expect_close(comm, 4000, timeout=10)


# --- token lifetime ----------------------------------------------------------------------------


async def test_expiring_token_warns_then_closes_4002(user, settings):
    settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING = 1
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=2))
    comm, connected = await connect(str(token))
    warning = await comm.receive_json_from(timeout=5)
    assert warning == {"type": "token_expiring", "expires_at": connected["expires_at"]}
    await expect_close(comm, 4002, timeout=5)


async def test_refresh_extends_the_connection(user, settings):
    settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING = 1
    short = AccessToken.for_user(user)
    short.set_exp(lifetime=timedelta(seconds=2))
    comm, _ = await connect(str(short))
    assert (await comm.receive_json_from(timeout=5))["type"] == "token_expiring"
    await comm.send_json_to({"type": "refresh", "token": access_token_for(user)})
    refreshed = await comm.receive_json_from(timeout=5)
    assert refreshed["type"] == "token_refreshed"
    await asyncio.sleep(1.5)  # past the first token's expiry
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()


async def test_refresh_with_another_users_token_closes_4002(user, other_user):
    comm, _ = await connect(access_token_for(user))
    await comm.send_json_to({"type": "refresh", "token": access_token_for(other_user)})
    await expect_close(comm, 4002)


@pytest.mark.parametrize("token", [None, "", "garbage"])
async def test_refresh_with_an_invalid_token_closes_4002(user, token):
    comm, _ = await connect(access_token_for(user))
    await comm.send_json_to({"type": "refresh", "token": token})
    await expect_close(comm, 4002)


# --- channel-layer messages --------------------------------------------------------------------


async def test_channel_messages_of_unknown_or_private_types_never_reach_a_handler(user):
    comm, _ = await connect(access_token_for(user))
    layer = get_channel_layer()
    group = user_group_name(user.id)
    for kind in ["_close", "websocket.close", "close", "notification._send_from_store"]:
        await layer.group_send(group, {"type": kind, "code": 1000})
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await publish(user)
    assert (await comm.receive_json_from(timeout=5))["id"] == 1
    await comm.disconnect()


# --- replay and gap fill -----------------------------------------------------------------------


async def test_resume_replays_missed_events_then_live_ones(user):
    for _ in range(3):
        await publish(user)
    comm, connected = await connect(access_token_for(user), last_event_id=1)
    assert connected["last_event_id"] == 3
    assert connected["recovered"] is True
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 3)] == [2, 3, 4]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_resume_during_concurrent_publishing_has_no_gap_and_no_duplicate(user, settings):
    settings.NOTIFICATIONS_REPLAY_BATCH = 7  # several store pages while events keep coming
    for _ in range(20):
        await publish(user)
    total = 80

    async def keep_publishing():
        for _ in range(total - 20):
            await publish(user)
            await asyncio.sleep(0)

    publisher = asyncio.create_task(keep_publishing())
    comm, _ = await connect(access_token_for(user), last_event_id=5)
    await publisher
    received = [e["id"] for e in await receive_events(comm, total - 5, timeout=10)]
    assert received == list(range(6, total + 1))
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_an_event_published_while_a_socket_authenticates_arrives_at_once(user, settings):
    # The socket joins its group before it reads its user and the store: an event that
    # arrives in between must wait for "connected", not be dropped until the next event or
    # the delivery watch (kept out of the way here).
    settings.NOTIFICATIONS_CATCHUP_INTERVAL = 60
    for attempt in range(25):
        connecting = asyncio.create_task(connect(access_token_for(user)))
        await asyncio.sleep(0.001 * (attempt % 5))
        published = (await publish(user)).event_id
        comm, connected = await connecting
        missing = published - connected["last_event_id"]
        received = [e["id"] for e in await receive_events(comm, missing, timeout=1)]
        assert received == list(range(connected["last_event_id"] + 1, published + 1))
        await comm.disconnect()


async def test_resume_after_pruning_reports_not_recovered(user):
    for _ in range(4):
        await publish(user)
    await sync_to_async(Event.objects.filter(user=user, event_id__lte=2).delete)()
    comm, connected = await connect(access_token_for(user), last_event_id=1)
    assert connected["recovered"] is False
    assert connected["last_event_id"] == 4
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 1)] == [5]
    await comm.disconnect()


async def test_resume_from_an_id_the_server_never_issued_reports_not_recovered(user):
    await publish(user)
    comm, connected = await connect(access_token_for(user), last_event_id=50)
    assert connected["recovered"] is False
    assert connected["last_event_id"] == 1
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 1)] == [2]
    await comm.disconnect()


async def test_resume_when_up_to_date_sends_only_live_events(user):
    await publish(user)
    comm, connected = await connect(access_token_for(user), last_event_id=1)
    assert connected["recovered"] is True
    assert await comm.receive_nothing(timeout=0.3)
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 1)] == [2]
    await comm.disconnect()


async def test_many_sockets_disconnecting_at_once_leave_no_group_member(user, settings):
    settings.NOTIFICATIONS_MAX_CONNECTIONS_PER_USER = 2000
    settings.NOTIFICATIONS_MAX_PENDING = 2000
    # redis-py 8's default pool raised MaxConnectionsError past 100 concurrent commands and
    # left most of these members behind for a day; the layer's pool waits instead.
    token = access_token_for(user)
    # The disconnect is the test: open them at a steady pace, patient with a machine that
    # runs other tests beside this one (a timed-out open leaves 999 opens running).
    opening = asyncio.Semaphore(50)

    async def open_one():
        async with opening:
            comm, _ = await connect(token, timeout=30)
            return comm

    sockets = await asyncio.gather(*(open_one() for _ in range(1000)))
    assert len(await group_members(user.id)) == 1000
    # The communicator cancels a consumer still cleaning up after `timeout` (1 s by default),
    # which a server never does: give each the time a loaded machine needs.
    await asyncio.gather(*(comm.disconnect(timeout=30) for comm in sockets))
    # Every member leaves (a failed discard would stay for a day).
    assert await wait_until(lambda: _group_empty(user.id), timeout=30)


async def _group_empty(user_id):
    return await group_members(user_id) == set()


async def test_a_lost_last_event_is_delivered_by_the_watch_without_a_next_event(user, settings):
    settings.NOTIFICATIONS_CATCHUP_INTERVAL = 0.2
    comm, _ = await connect(access_token_for(user))
    layer = get_channel_layer()
    group = user_group_name(user.id)
    [channel] = await group_members(user.id)
    await layer.group_discard(group, channel)
    await publish(user)  # the layer never delivers it, and nothing follows it
    await aflush_deliveries()
    await layer.group_add(group, channel)
    assert [e["id"] for e in await receive_events(comm, 1, timeout=3)] == [1]
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


async def test_a_token_already_inside_the_warning_window_is_warned_about_at_once(user, settings):
    settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING = 60
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=3))
    comm, connected = await connect(str(token))
    warning = await comm.receive_json_from(timeout=1)
    assert warning == {"type": "token_expiring", "expires_at": connected["expires_at"]}
    await comm.send_json_to({"type": "refresh", "token": access_token_for(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "token_refreshed"
    await asyncio.sleep(3.5)  # past the first token's expiry
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()
