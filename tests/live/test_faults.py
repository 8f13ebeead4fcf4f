"""Faults against real server processes (uvicorn on 127.0.0.1, as `manage.py serve` runs it):
origin refusal, SIGTERM, slow readers, idle sockets, reconnect rushes, Redis restarts and black
holes, and revocation across processes. Every scenario ends with "no event lost"."""

import asyncio
import base64
import json
import os
import signal
import socket
import threading
import time

import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.demo_server import DEMO_EMAIL, DemoServer, api
from tests.support.live import LiveServer
from tests.support.live_clients import ResumingReader, close_code, ws_connect
from tests.support.redis import RedisServer, free_port

pytestmark = [pytest.mark.live, pytest.mark.redis]


# Hundreds of sockets from 127.0.0.1 at once stand for as many clients on their own addresses:
# the per-address limits (tests/notifications/realtime/test_connections.py) are off for them.
MANY_FROM_ONE_ADDRESS = {
    "NOTIFICATIONS_MAX_PENDING_PER_IP": "0",
    "NOTIFICATIONS_CONNECT_RATE_PER_IP": "0",
}


def group_size(redis_url: str, user_id: str) -> int:
    return redis.Redis.from_url(redis_url).zcard(f"asgi:group:events.{user_id}")


@pytest.fixture
def demo(redis_url):
    with DemoServer(env={"REDIS_URL": redis_url}) as server:
        yield server


# --- the upgrade ----------------------------------------------------------------------------


async def test_a_foreign_origin_gets_http_403_and_an_allowed_one_connects(demo):
    token = demo.login()["access"]
    for origin in ["http://evil.example.com", "null", "http://localhost.evil.com"]:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(demo.ws_url, origin=origin, open_timeout=10)
        assert refused.value.response.status_code == 403
    ws = await websockets.connect(demo.ws_url, origin="http://localhost:3000", open_timeout=10)
    await ws.send(json.dumps({"token": token}))
    assert json.loads(await ws.recv())["type"] == "connected"
    await ws.close()


# --- restarts -------------------------------------------------------------------------------


async def test_sigterm_closes_sockets_4012_leaves_no_group_member_and_500_clients_return(
    redis_url,
):
    server = DemoServer(
        env={
            "REDIS_URL": redis_url,
            "CHANNEL_LAYER": "core",  # its group members live in Redis, where we count them
            "NOTIFICATIONS_MAX_CONNECTIONS_PER_USER": "600",
            **MANY_FROM_ONE_ADDRESS,
        }
    )
    server.start()
    try:
        tokens = server.login()
        sockets = await asyncio.gather(
            *(ws_connect(server.ws_url, tokens["access"]) for _ in range(500))
        )
        user_id = sockets[0][1]["user_id"]
        assert group_size(redis_url, user_id) == 500

        server.server.process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(close_code(ws, timeout=20) for ws, _ in sockets))
        assert set(codes) == {4012}
        server.server.process.wait(30)
        assert group_size(redis_url, user_id) == 0

        server.start_again()
        started = time.monotonic()
        back = await asyncio.gather(
            *(ws_connect(server.ws_url, tokens["access"], last_event_id=0) for _ in range(500))
        )
        recovery = time.monotonic() - started
        assert len(back) == 500
        print(f"\n500 clients reconnected in {recovery:.2f} s after a restart")
        await asyncio.gather(*(ws.close() for ws, _ in back))
    finally:
        server.stop()


# --- slow readers ---------------------------------------------------------------------------


class RawWebSocket:
    """A WebSocket client on a plain socket with a tiny receive buffer, that reads only when
    told to: the reader who went away without closing (a frozen tab, a dead mobile link)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /api/v1/notifications/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response

    def send_text(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        length = len(data)
        header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE])
        if length >= 126:
            header += length.to_bytes(2, "big")
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, size: int) -> bytes:
        chunks = b""
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("closed without a close frame")
            chunks += chunk
        return chunks

    def read_until_close(self) -> list[tuple[int, bytes]]:
        frames = []
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(2), "big")
            elif length == 127:
                length = int.from_bytes(self._read(8), "big")
            frames.append((first & 0x0F, self._read(length)))
            if first & 0x0F == 0x8:
                self.sock.close()
                return frames


def publish_large_events(server: DemoServer, count: int) -> None:
    server.run_django(
        "import uuid\n"
        "from notifications.publish import publish_event\n"
        "from reasonflow.users.models import User\n"
        f"user = User.objects.get(email={DEMO_EMAIL!r})\n"
        f"for _ in range({count}):\n"
        "    publish_event(user_id=user.id, event_type='email_received', data={\n"
        "        'email_id': uuid.uuid4(), 'subject': 'x' * 60_000,\n"
        "        'sender': 'bulk@example.com'})\n"
    )


@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_a_client_that_stops_reading_is_closed_4010_and_loses_nothing(redis_url, layer):
    env = {"REDIS_URL": redis_url, "NOTIFICATIONS_SEND_TIMEOUT": "1", "CHANNEL_LAYER": layer}
    with DemoServer(env=env) as server:
        token = server.login()["access"]
        healthy, _ = await ws_connect(server.ws_url, token)

        slow = RawWebSocket(server.port)
        slow.send_text(json.dumps({"token": token}))  # then it stops reading

        # 400 events of ~60 KB: far more than the kernel buffers between the ends can hold.
        total = 400
        publisher = threading.Thread(target=publish_large_events, args=(server, total))
        publisher.start()
        healthy_ids = []
        async with asyncio.timeout(60):
            while len(healthy_ids) < total:
                message = json.loads(await healthy.recv())
                healthy_ids.append(message["id"])
        await asyncio.to_thread(publisher.join, 60)
        assert healthy_ids == list(range(1, total + 1))
        await asyncio.sleep(3)  # the reader stays away well past the 1 s send timeout

        slow_ids, code = [], None
        for opcode, payload in await asyncio.to_thread(slow.read_until_close):
            if opcode == 0x1 and "id" in (message := json.loads(payload)):
                slow_ids.append(message["id"])
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big")
        print(f"\nthe slow reader took {len(slow_ids)} of {total} events before 4010")
        assert code == 4010
        assert slow_ids == list(range(1, len(slow_ids) + 1))
        assert len(slow_ids) < total

        resumed, connected = await ws_connect(server.ws_url, token, last_event_id=slow_ids[-1])
        assert connected["recovered"] is True
        rest = [json.loads(await resumed.recv())["id"] for _ in range(total - len(slow_ids))]
        assert slow_ids + rest == list(range(1, total + 1))
        await resumed.close()
        await healthy.close()


# --- idle sockets and reconnect rushes ------------------------------------------------------


async def test_300_idle_sockets_outlast_three_blocking_reads_of_the_redis_layer(redis_url):
    # The core layer's 5 s blocking reads are what redis-py 8's 5 s socket timeout broke: it
    # closed every socket at the first read that ended empty.
    env = {
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER": "core",
        "NOTIFICATIONS_MAX_CONNECTIONS_PER_USER": "300",
        **MANY_FROM_ONE_ADDRESS,
    }
    with DemoServer(env=env) as server:
        await idle_sockets_stay_open(server, count=300, seconds=16)


async def idle_sockets_stay_open(server: DemoServer, *, count: int, seconds: float) -> None:
    token = server.login()["access"]
    sockets = [
        ws
        for ws, _ in await asyncio.gather(*(ws_connect(server.ws_url, token) for _ in range(count)))
    ]
    await asyncio.sleep(seconds)  # past many 5 s blocking reads of the Redis layer
    for ws in sockets:
        await ws.send(json.dumps({"type": "ping"}))
    answers = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 10) for ws in sockets))
    assert all(json.loads(answer) == {"type": "pong"} for answer in answers)
    await asyncio.gather(*(ws.close() for ws in sockets))


# --- Redis faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_a_redis_restart_loses_no_event_published_before_during_or_after(layer):
    private_redis = RedisServer().start()
    env = {"REDIS_URL": private_redis.url, "CHANNEL_LAYER": layer}
    env["NOTIFICATIONS_CATCHUP_INTERVAL"] = "1"
    server = DemoServer(env=env)
    try:
        server.start()
        token = server.login()["access"]
        readers = [ResumingReader(server.ws_url, token).start() for _ in range(20)]
        for reader in readers:
            await asyncio.wait_for(reader.connected.wait(), 20)

        await asyncio.to_thread(
            server.publish_direct, email=DEMO_EMAIL, event_type="email_received", count=5
        )
        await asyncio.gather(*(reader.wait_for(5) for reader in readers))

        private_redis.stop()
        if layer == "core":
            # A restarted Redis has no groups left: every socket is closed, retryably.
            async with asyncio.timeout(20):
                while not all(reader.close_codes for reader in readers):
                    await asyncio.sleep(0.05)
        # The pub/sub layer keeps its groups in the process and subscribes again; what was
        # published meanwhile comes from the store (gap fill, delivery watch).
        await asyncio.to_thread(
            server.publish_direct, email=DEMO_EMAIL, event_type="draft_ready", count=5
        )
        await asyncio.sleep(1)
        private_redis.start()
        restarted = time.monotonic()
        for reader in readers:
            await asyncio.wait_for(reader.connected.wait(), 30)
        await asyncio.to_thread(
            server.publish_direct, email=DEMO_EMAIL, event_type="email_sent", count=5
        )
        await asyncio.gather(*(reader.wait_for(15) for reader in readers))
        recovery = time.monotonic() - restarted
        print(f"\n{layer}: 20 clients had every event {recovery:.2f} s after Redis came back")
        for reader in readers:
            assert reader.ids == list(range(1, 16)), reader.ids
            assert 1011 not in reader.close_codes
            if layer == "core":
                assert {4012, 4000} & set(reader.close_codes)
            await reader.stop()
    finally:
        server.stop()
        private_redis.stop()
        if layer == "core":
            # A restarted Redis has no groups left: every socket is closed, retryably.
            async with asyncio.timeout(20):
                while not all(reader.close_codes for reader in readers):
                    await asyncio.sleep(0.05)
        # The pub/sub layer keeps its groups in the process and subscribes again; what was
        # published meanwhile comes from the store (gap fill, delivery watch).


class BlackHole:
    """A loopback TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


async def test_a_redis_that_never_answers_does_not_stall_a_publishing_request(redis_url):
    hole = BlackHole()
    server = DemoServer(env={"REDIS_URL": f"redis://127.0.0.1:{hole.port}/0"})
    try:
        server.start()
        # Logins answer 503 while the throttles' Redis does not: mint the token directly.
        staff = server.issue_tokens()["access"]
        started = time.monotonic()
        status, body = await asyncio.to_thread(
            api,
            server.http_url,
            "POST",
            "notifications/test",
            token=staff,
            body={"user": DEMO_EMAIL, "type": "draft_ready"},
        )
        elapsed = time.monotonic() - started
        assert status == 201
        assert elapsed < 2, elapsed
        status, history = api(server.http_url, "GET", "notifications/events", token=staff)
        assert [e["id"] for e in history["events"]] == [1]

        # Later, with a Redis that answers, the stored event is replayed.
        server.stop()
        server.extra_env["REDIS_URL"] = redis_url
        server.start_again()
        ws, connected = await ws_connect(server.ws_url, server.login()["access"], last_event_id=0)
        assert connected["recovered"] is True
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == body["event"]
        await ws.close()
    finally:
        server.stop()
        hole.close()


# --- revocation across processes -------------------------------------------------------------


async def test_logout_on_one_process_closes_the_users_sockets_on_every_process(redis_url):
    with DemoServer(env={"REDIS_URL": redis_url}) as first:
        env = {"REDIS_URL": redis_url, "DATABASE_URL": first.database_url}
        with LiveServer(env=env) as second:
            session = first.register("traveller@example.com")
            other_device = first.login("traveller@example.com", "live-client-password-7731")
            on_first, _ = await ws_connect(first.ws_url, session["access"])
            on_second, _ = await ws_connect(second.ws_url, other_device["access"])

            started = time.monotonic()
            status, _ = api(
                second.http_url, "POST", "auth/logout", body={"refresh": session["refresh"]}
            )
            assert status == 204
            codes = await asyncio.gather(close_code(on_first, 5), close_code(on_second, 5))
            assert codes == [4002, 4002]
            assert time.monotonic() - started < 1.5

            with pytest.raises(ConnectionClosed) as refused:
                await ws_connect(first.ws_url, other_device["access"])
            assert refused.value.rcvd.code == 4002


# --- group membership -----------------------------------------------------------------------


async def test_live_sockets_stay_in_their_group_and_a_killed_process_leaves_none(redis_url):
    env = {
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER": "core",  # group expiry is the core layer's (pub/sub groups are local)
        "CHANNEL_LAYER_GROUP_EXPIRY": "3",
        "NOTIFICATIONS_GROUP_REFRESH": "1",
    }
    server = DemoServer(env=env)
    server.start()
    try:
        token = server.login()["access"]
        sockets = [
            ws
            for ws, _ in await asyncio.gather(*(ws_connect(server.ws_url, token) for _ in range(5)))
        ]
        user_id = (await asyncio.to_thread(server.run_django, USER_ID_OF_DEMO)).strip()
        await asyncio.sleep(5)  # longer than group_expiry: only the refresh keeps them in
        assert group_size(redis_url, user_id) == 5
        await asyncio.to_thread(server.publish_direct, email=DEMO_EMAIL, event_type="draft_ready")
        for ws in sockets:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["id"] == 1

        server.server.process.send_signal(signal.SIGKILL)  # no chance to discard anything
        server.server.process.wait(10)
        await asyncio.sleep(4)
        assert group_size(redis_url, user_id) == 0
    finally:
        server.stop()


USER_ID_OF_DEMO = (
    f"from reasonflow.users.models import User\nprint(User.objects.get(email={DEMO_EMAIL!r}).id)"
)
