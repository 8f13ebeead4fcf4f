"""The event stream over server-sent events (PROTOCOL §5), end to end against NotifyServer (the
production uvicorn config, in this process so the test can see its registry, groups and
presence) on the in-memory and Redis pub/sub layers: refusals before any stream, tickets,
framing, resume across the replay-to-live switch, the socket's ids, revocation, expiry, caps,
heartbeats, shutdown, and cleanup after a client goes away."""

import asyncio
import json
import socket
import time
import uuid
from datetime import timedelta

import pytest
import requests
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from prometheus_client import REGISTRY
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from notifications import compat
from notifications.clients.sse import open_event_stream
from notifications.close_codes import CloseCode
from notifications.publish import apublish_event, user_group_name
from notifications.realtime.connections import registry
from notifications.realtime.presence import presence_count_for_user, tracker
from reasonflow.users.services import user_revoke_tokens
from tests.conftest import MEMORY_LAYER, access_token_for, pubsub_layer_config
from tests.support.live import notify_server_here
from tests.support.live_clients import ws_connect
from tests.support.ws import publish, wait_until


@pytest.fixture(params=["memory", "pubsub"])
async def server(request, transactional_db, settings):
    """NotifyServer on 127.0.0.1 in this event loop, serving the test database."""
    if request.param == "pubsub":
        settings.CHANNEL_LAYERS = pubsub_layer_config(request.getfixturevalue("redis_url"))
    else:
        settings.CHANNEL_LAYERS = MEMORY_LAYER
    async with notify_server_here() as server:
        yield server


class Stream:
    """One open event stream: its response and its messages, read one at a time."""

    def __init__(self, response) -> None:
        self.response = response
        self._messages = response.messages().__aiter__()

    async def next(self, timeout: float = 10):
        return await asyncio.wait_for(anext(self._messages), timeout)

    async def until_closed(self, timeout: float = 10) -> tuple[list, int]:
        """Every message up to `closed`, and the code it carries."""
        seen = []
        while True:
            message = await self.next(timeout)
            if message.event == "closed":
                return seen, json.loads(message.data)["code"]
            seen.append(message)

    async def close(self) -> None:
        await self.response.close()


async def open_stream(server, token=None, *, query="", headers=None) -> Stream:
    """Open a stream that must start (200) and read its `connected`."""
    response = await request_stream(server, token, query=query, headers=headers)
    assert response.status == 200, (response.status, await response.body())
    return Stream(response)


async def request_stream(server, token=None, *, query="", headers=None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await open_event_stream(f"{server.stream_url}{query}", headers=headers)


async def new_ticket(server, token: str) -> dict:
    response = await asyncio.to_thread(
        requests.post,
        f"{server.http_url}/api/v1/notifications/stream/ticket",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def group_members(group: str) -> int:
    """How many channels of this process are in `group` on the current layer."""
    layer = get_channel_layer()
    if hasattr(layer, "new_local_channel"):
        loop_layer = compat.loop_layer(layer)
        _, name = compat.shard_for_group(loop_layer, group)
        return len(loop_layer.groups.get(name, ()))
    return len(layer.groups.get(group, {}))


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- refusals before any stream ----------------------------------------------------------


@pytest.mark.parametrize(
    "headers, query",
    [
        ({}, ""),
        ({"Authorization": "Bearer not-a-token"}, ""),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, ""),
        ({}, "?ticket=made-up"),
        ({}, "?ticket="),
    ],
    ids=["none", "bad-token", "not-bearer", "unknown-ticket", "empty-ticket"],
)
async def test_no_usable_credentials_is_401_json_before_any_stream(server, headers, query):
    response = await request_stream(server, query=query, headers=headers)
    assert response.status == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "detail" in await response.json()
    await response.close()
    assert not registry.all()


async def test_a_refresh_token_is_not_an_access_token_401(server, user):
    refresh = await sync_to_async(RefreshToken.for_user)(user)
    response = await request_stream(server, str(refresh))
    assert response.status == 401
    await response.close()


async def test_a_foreign_origin_is_403_and_an_allowed_one_streams(server, user):
    token = access_token_for(user)
    response = await request_stream(server, token, headers={"Origin": "https://evil.example"})
    assert response.status == 403
    assert "detail" in await response.json()
    await response.close()
    stream = await open_stream(server, token, headers={"Origin": "http://localhost"})
    assert (await stream.next()).event == "connected"
    await stream.close()


@pytest.mark.parametrize("query", ["?last_event_id=abc", "?last_event_id=-1"])
async def test_a_bad_last_event_id_is_400_naming_the_field(server, user, query):
    response = await request_stream(server, access_token_for(user), query=query)
    assert response.status == 400
    assert "last_event_id" in await response.json()
    await response.close()


async def test_a_post_is_405(server, user):
    response = await asyncio.to_thread(
        requests.post,
        server.stream_url,
        headers={"Authorization": f"Bearer {access_token_for(user)}"},
        timeout=10,
    )
    assert response.status_code == 405
    assert "detail" in response.json()


# --- the stream -----------------------------------------------------------------------------


async def test_the_stream_starts_with_the_sockets_connected_object(server, user):
    token = access_token_for(user)
    accepted = metric("notify_connections_accepted_total", transport="sse")
    stream = await open_stream(server, token)
    headers = stream.response.headers
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    connected = await stream.next()
    assert connected.event == "connected" and connected.id is None
    over_sse = json.loads(connected.data)

    ws, over_socket = await ws_connect(server.ws_url, token)
    assert over_sse.keys() == over_socket.keys()
    assert over_sse == over_socket
    assert over_sse["type"] == "connected" and over_sse["user_id"] == str(user.id)
    assert metric("notify_connections_accepted_total", transport="sse") == accepted + 1
    await ws.close()
    await stream.close()


async def test_a_socket_and_a_stream_of_one_user_get_the_same_events(server, user):
    token = access_token_for(user)
    stream = await open_stream(server, token)
    await stream.next()  # connected
    ws, _ = await ws_connect(server.ws_url, token)
    sent = [await publish(user) for _ in range(3)]

    over_socket = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in sent]
    over_sse = [await stream.next() for _ in sent]

    assert [e["id"] for e in over_socket] == [e.event_id for e in sent] == [1, 2, 3]
    assert [m.id for m in over_sse] == ["1", "2", "3"]
    assert [m.event for m in over_sse] == [e.type for e in sent]
    assert [json.loads(m.data) for m in over_sse] == over_socket
    await ws.close()
    await stream.close()


async def test_live_events_are_written_as_chunks_straight_to_the_connection(server, user):
    # The fan-out's fast path (compat.chunk_writer) is on under the production config: two
    # streams of one user share each group message's frame, and read what a replay sends.
    token = access_token_for(user)
    streams = [await open_stream(server, token) for _ in range(2)]
    for stream in streams:
        await stream.next()  # connected
    consumers = registry.by_user[user.id]
    assert len(consumers) == 2
    assert all(consumer.stream.write_at_once is not None for consumer in consumers)
    sent = [await publish(user) for _ in range(3)]

    live = [[await stream.next() for _ in sent] for stream in streams]

    replayed = await open_stream(server, token, headers={"Last-Event-ID": "0"})
    await replayed.next()  # connected
    from_store = [await replayed.next() for _ in sent]
    for received in live:
        assert [m.id for m in received] == ["1", "2", "3"]
        assert [(m.event, m.data) for m in received] == [(m.event, m.data) for m in from_store]
    for stream in [*streams, replayed]:
        await stream.close()


async def test_a_ticket_opens_one_stream_once(server, user):
    token = access_token_for(user)
    issued = await new_ticket(server, token)
    assert set(issued) == {"ticket", "expires_at"} and token not in issued["ticket"]

    stream = await open_stream(server, query=f"?ticket={issued['ticket']}")
    connected = json.loads((await stream.next()).data)
    assert connected["user_id"] == str(user.id)
    await publish(user)
    assert (await stream.next()).id == "1"

    again = await request_stream(server, query=f"?ticket={issued['ticket']}")
    assert again.status == 401
    await again.close()
    await stream.close()


async def test_a_ticket_needs_a_bearer_token(server):
    response = await asyncio.to_thread(
        requests.post, f"{server.http_url}/api/v1/notifications/stream/ticket", timeout=10
    )
    assert response.status_code == 401


async def test_an_expired_ticket_is_401(server, user, settings):
    settings.NOTIFICATIONS_SSE_TICKET_TTL = 0.3
    issued = await new_ticket(server, access_token_for(user))
    await asyncio.sleep(0.6)
    response = await request_stream(server, query=f"?ticket={issued['ticket']}")
    assert response.status == 401
    await response.close()


async def test_a_ticket_of_a_revoked_token_is_401(server, user):
    issued = await new_ticket(server, access_token_for(user))
    await sync_to_async(user_revoke_tokens)(user=user)
    response = await request_stream(server, query=f"?ticket={issued['ticket']}")
    assert response.status == 401
    await response.close()


@pytest.mark.parametrize("resume_by", ["header", "query"])
async def test_resume_has_no_gap_and_no_duplicate_across_the_switch_to_live(
    server, user, resume_by
):
    for _ in range(5):
        await publish(user)
    token = access_token_for(user)
    if resume_by == "header":
        opening = open_stream(server, token, headers={"Last-Event-ID": "2"})
    else:
        opening = open_stream(server, token, query="?last_event_id=2")
    # Events keep coming while the stream opens and replays.
    publishing = asyncio.create_task(publish_many(user, 20))
    stream = await opening
    connected = json.loads((await stream.next()).data)
    assert connected["recovered"] is True
    await publishing
    ids = [int((await stream.next()).id) for _ in range(3, 26)]
    assert ids == list(range(3, 26))
    await stream.close()


async def publish_many(user, count: int) -> None:
    for _ in range(count):
        await publish(user)


async def test_a_resume_past_what_was_kept_is_not_recovered(server, user):
    await publish(user)
    stream = await open_stream(server, access_token_for(user), headers={"Last-Event-ID": "7"})
    assert json.loads((await stream.next()).data)["recovered"] is False
    await stream.close()


async def test_revocation_ends_the_stream_with_closed_4002(server, user):
    stream = await open_stream(server, access_token_for(user))
    await stream.next()
    await sync_to_async(user_revoke_tokens)(user=user)
    _, code = await stream.until_closed()
    assert code == CloseCode.INVALID_TOKEN
    await wait_until(registry_emptied)
    await stream.close()


async def test_expiry_warns_with_token_expiring_then_closes_4002(server, user, settings):
    settings.NOTIFICATIONS_TOKEN_EXPIRY_WARNING = 60
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=2))
    stream = await open_stream(server, str(token))
    assert (await stream.next()).event == "connected"
    seen, code = await stream.until_closed()
    assert [m.event for m in seen] == ["token_expiring"]
    assert json.loads(seen[0].data)["type"] == "token_expiring"
    assert code == CloseCode.INVALID_TOKEN


async def test_over_the_per_user_cap_the_stream_closes_4008(server, user, settings):
    settings.NOTIFICATIONS_MAX_CONNECTIONS_PER_USER = 1
    token = access_token_for(user)
    first = await open_stream(server, token)
    await first.next()
    second = await open_stream(server, token)
    seen, code = await second.until_closed()
    assert code == CloseCode.POLICY and seen == []
    await second.close()
    await first.close()


async def test_an_idle_stream_gets_ping_comments(server, user, settings):
    settings.NOTIFICATIONS_SSE_PING_INTERVAL = 0.2
    stream = await open_stream(server, access_token_for(user))
    await stream.next()
    with pytest.raises(TimeoutError):
        await stream.next(timeout=1)  # comments are not messages
    assert stream.response.comments >= 3
    await stream.close()


async def test_shutdown_ends_every_stream_with_closed_4012(server, user, other_user):
    streams = [await open_stream(server, access_token_for(u)) for u in (user, other_user)]
    for stream in streams:
        await stream.next()
    server.should_exit = True
    codes = [(await stream.until_closed())[1] for stream in streams]
    assert codes == [CloseCode.RESTARTING] * 2


async def registry_emptied() -> bool:
    return not registry.all()


async def test_a_client_that_goes_away_leaves_no_member_presence_or_registry_entry(server, user):
    group = user_group_name(user.id)
    count = sync_to_async(presence_count_for_user)
    open_before = metric("notify_open_connections", transport="sse")
    stream = await open_stream(server, access_token_for(user))
    await stream.next()
    assert registry.count_for_user(user.id) == 1
    assert group_members(group) == 1
    await tracker.publish()
    assert await count(user_id=user.id) == 1

    went_at = time.monotonic()
    await stream.close()
    await wait_until(registry_emptied, timeout=3)
    assert group_members(group) == 0
    await tracker.publish()
    assert await count(user_id=user.id) == 0
    assert time.monotonic() - went_at < 3
    assert metric("notify_open_connections", transport="sse") == open_before
    # Nothing of it is left to deliver to: publishing still works for the others.
    await publish(user)


async def test_sockets_and_streams_count_against_one_per_user_cap(server, user, settings):
    settings.NOTIFICATIONS_MAX_CONNECTIONS_PER_USER = 1
    token = access_token_for(user)
    ws, _ = await ws_connect(server.ws_url, token)
    stream = await open_stream(server, token)
    seen, code = await stream.until_closed()
    assert code == CloseCode.POLICY and seen == []
    await stream.close()
    await ws.close()


async def test_a_client_that_stops_reading_is_dropped_and_resumes_without_loss(
    server, user, settings
):
    settings.NOTIFICATIONS_SEND_TIMEOUT = 0.5
    settings.NOTIFICATIONS_SSE_PING_INTERVAL = 0.5
    # A reader with a tiny receive buffer that reads nothing: a frozen tab, a dead mobile link.
    port = int(server.http_url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    request = (
        "GET /api/v1/notifications/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {access_token_for(user)}\r\n\r\n"
    )
    await asyncio.get_running_loop().sock_sendall(sock, request.encode())

    async def streaming() -> bool:
        return registry.count_for_user(user.id) == 1

    await wait_until(streaming)

    total = 100  # of ~60 KB each: far more than the buffers between the two ends hold
    for _ in range(total):
        await apublish_event(
            user_id=user.id,
            event_type="email_received",
            data={"email_id": uuid.uuid4(), "subject": "x" * 60_000, "sender": "bulk@example.com"},
        )
    # Too slow (4010): it leaves the registry, its group and presence within the send timeout.
    await wait_until(registry_emptied, timeout=10)
    assert group_members(user_group_name(user.id)) == 0

    # What it had buffered is in order from 1; then the connection ends (a drop: resume).
    received = b""
    async with asyncio.timeout(30):
        while chunk := await asyncio.get_running_loop().sock_recv(sock, 65536):
            received += chunk
    sock.close()
    ids = [int(line[4:]) for line in received.split(b"\n") if line.startswith(b"id: ")]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) < total

    stream = await open_stream(
        server, access_token_for(user), headers={"Last-Event-ID": str(ids[-1])}
    )
    assert json.loads((await stream.next()).data)["recovered"] is True
    rest = [int((await stream.next()).id) for _ in range(total - len(ids))]
    assert ids + rest == list(range(1, total + 1))
    await stream.close()
