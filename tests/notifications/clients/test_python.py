"""notifications/clients/python.py against a live server: events in order, resume across a server
restart with no loss and no duplicate (over the WebSocket and over server-sent events), the
token callback on 4001/4002, backoff bounds, keepalive and in-band token refresh, and `auto`
falling back to the event stream where upgrades are blocked, then back to the WebSocket."""

import asyncio
import uuid

import pytest

from notifications.clients.python import (
    AuthenticationFailed,
    NotificationClient,
    StateChange,
    backoff_ceiling,
    backoff_delay,
    stream_url_for,
)
from tests.support.demo_server import DemoServer
from tests.support.proxy import UpgradeBlockingProxy
from tests.support.redis import free_port

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server():
    with DemoServer() as live:
        live.staff = live.login()
        yield live


def new_user(server: DemoServer) -> dict:
    email = f"py-client-{uuid.uuid4().hex[:10]}@example.com"
    body = server.register(email)
    return {"email": email, "id": body["user"]["id"], "access": body["access"]}


async def send(server: DemoServer, user: dict, event_type: str) -> dict:
    return await asyncio.to_thread(
        server.send_test_event,
        staff_token=server.staff["access"],
        user=user["email"],
        event_type=event_type,
    )


class Recorder:
    """Runs client.events() in a task and keeps what it yields and every state change."""

    def __init__(self, client: NotificationClient) -> None:
        self.client = client
        self.events: list[dict] = []
        self.states: list[StateChange] = []
        self.error: BaseException | None = None
        client._on_state = self.states.append
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.client.events():
                self.events.append(event)
        except Exception as exc:
            self.error = exc

    async def until(self, predicate, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.task.done() and not predicate():
                    raise AssertionError(f"events() ended early: {self.error!r}")
                await asyncio.sleep(0.02)

    def count(self, state: str) -> int:
        return sum(1 for change in self.states if change.state == state)

    async def stop(self) -> None:
        await self.client.close()
        await asyncio.wait_for(self.task, 10)


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_a_doubling_ceiling():
    for attempt in range(12):
        ceiling = backoff_ceiling(attempt)
        assert ceiling == min(30.0, 0.5 * 2**attempt)
        assert backoff_delay(attempt, rand=lambda: 0.0) == 0.0
        assert 0 <= backoff_delay(attempt) < ceiling
    assert backoff_ceiling(10_000) == 30.0


async def test_reconnect_delays_to_a_dead_port_stay_in_bounds_and_never_give_up():
    client = NotificationClient(
        f"ws://127.0.0.1:{free_port()}/api/v1/notifications/ws",
        get_token=lambda: "unused",
        backoff_initial=0.01,
        backoff_max=0.08,
    )
    recorder = Recorder(client)
    await recorder.until(lambda: recorder.count("reconnecting") >= 9)
    await recorder.stop()
    retries = [change for change in recorder.states if change.state == "reconnecting"]
    for attempt, change in enumerate(retries):
        assert 0 <= change.delay < backoff_ceiling(attempt, initial=0.01, maximum=0.08)
        assert change.close_code == 1006
    assert len({change.delay for change in retries[3:]}) > 1  # jittered, not fixed
    assert recorder.states[-1].state == "closed"


async def test_with_rand_near_one_the_delays_double_up_to_the_cap():
    client = NotificationClient(
        f"ws://127.0.0.1:{free_port()}/api/v1/notifications/ws",
        get_token=lambda: "unused",
        backoff_initial=0.01,
        backoff_max=0.08,
        rand=lambda: 1.0,
    )
    recorder = Recorder(client)
    await recorder.until(lambda: recorder.count("reconnecting") >= 6)
    await recorder.stop()
    delays = [c.delay for c in recorder.states if c.state == "reconnecting"][:6]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08, 0.08])


# --- events and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_events_arrive_in_order_and_connected_is_reported(server, transport):
    user = new_user(server)
    connected = []
    client = NotificationClient(
        server.ws_url,
        get_token=lambda: user["access"],
        on_connected=connected.append,
        transport=transport,
    )
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    assert connected[0]["user_id"] == user["id"]
    sent = [await send(server, user, kind) for kind in ("email_received", "draft_ready")]
    await recorder.until(lambda: len(recorder.events) == 2)
    await recorder.stop()
    assert recorder.events == sent
    assert client.last_event_id == 2
    assert {change.transport for change in recorder.states} == {transport}


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_resume_across_a_server_restart_loses_and_duplicates_nothing(server, transport):
    user = new_user(server)
    client = NotificationClient(
        server.ws_url,
        get_token=lambda: user["access"],
        backoff_initial=0.2,
        backoff_max=0.5,
        transport=transport,
    )
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    await send(server, user, "email_received")
    await recorder.until(lambda: len(recorder.events) == 1)

    await asyncio.to_thread(server.stop)
    await recorder.until(lambda: recorder.count("reconnecting") >= 1)
    published = await asyncio.to_thread(
        server.publish_direct, email=user["email"], event_type="draft_ready", count=3
    )
    assert published == [2, 3, 4]
    await asyncio.to_thread(server.start_again)
    await recorder.until(lambda: recorder.count("connected") == 2, timeout=30)
    await send(server, user, "email_sent")
    await recorder.until(lambda: len(recorder.events) == 5)
    await asyncio.sleep(0.3)  # nothing else may trickle in
    await recorder.stop()
    assert [event["id"] for event in recorder.events] == [1, 2, 3, 4, 5]
    resumed = [c for c in recorder.states if c.state == "connected"][1]
    assert resumed.recovered is True


async def test_an_id_the_server_never_issued_reports_not_recovered(server):
    user = new_user(server)
    await send(server, user, "email_received")
    client = NotificationClient(server.ws_url, get_token=lambda: user["access"], last_event_id=500)
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    assert recorder.states[-1].recovered is False
    assert client.last_event_id == 1
    sent = await send(server, user, "email_sent")
    await recorder.until(lambda: len(recorder.events) == 1)
    await recorder.stop()
    assert recorder.events == [sent]


# --- authentication ---------------------------------------------------------------------------


async def test_an_invalid_token_is_not_retried_the_callback_gives_a_new_one(server):
    user = new_user(server)
    calls = []

    async def get_token():
        calls.append(1)
        return user["access"]

    client = NotificationClient(server.ws_url, get_token=get_token, token="not-a-jwt")
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    await recorder.stop()
    assert len(calls) == 1
    codes = [c.close_code for c in recorder.states if c.close_code is not None]
    assert codes == [4002]  # the 4002 led straight to the callback, not to a backoff
    assert recorder.count("reconnecting") == 0
    assert recorder.count("connecting") == 2


async def test_a_failing_token_callback_stops_with_authentication_failed(server):
    def get_token():
        raise RuntimeError("refresh token expired")

    client = NotificationClient(server.ws_url, get_token=get_token, token="not-a-jwt")
    recorder = Recorder(client)
    await asyncio.wait_for(recorder.task, 10)
    assert isinstance(recorder.error, AuthenticationFailed)
    assert client.state == "auth_failed"
    assert recorder.count("connecting") == 1


async def test_the_same_rejected_token_again_stops_instead_of_looping(server):
    client = NotificationClient(server.ws_url, get_token=lambda: "still-not-a-jwt")
    recorder = Recorder(client)
    await asyncio.wait_for(recorder.task, 10)
    assert isinstance(recorder.error, AuthenticationFailed)
    assert recorder.count("connecting") == 1


async def test_a_fresh_token_that_is_rejected_too_stops(server):
    tokens = iter(["bad-one", "bad-two", "bad-three"])
    client = NotificationClient(server.ws_url, get_token=lambda: next(tokens))
    recorder = Recorder(client)
    await asyncio.wait_for(recorder.task, 10)
    assert isinstance(recorder.error, AuthenticationFailed)
    assert recorder.error.close_code == 4002
    assert recorder.count("connecting") == 2


# --- keepalive and refresh ----------------------------------------------------------------------


async def test_pings_are_answered_and_keep_the_socket(server):
    user = new_user(server)
    client = NotificationClient(
        server.ws_url, get_token=lambda: user["access"], ping_interval=0.1, pong_timeout=0.5
    )
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    await asyncio.sleep(1.0)
    sent = await send(server, user, "draft_ready")
    await recorder.until(lambda: len(recorder.events) == 1)
    await recorder.stop()
    assert recorder.events == [sent]
    assert recorder.count("connected") == 1
    assert recorder.count("reconnecting") == 0


async def test_a_pong_that_never_comes_replaces_the_socket(server):
    user = new_user(server)
    # A pong timeout of zero cannot be met: every ping round drops the socket.
    client = NotificationClient(
        server.ws_url,
        get_token=lambda: user["access"],
        ping_interval=0.2,
        pong_timeout=0,
        backoff_initial=0.01,
    )
    recorder = Recorder(client)
    await recorder.until(lambda: recorder.count("connected") >= 2)
    await recorder.stop()
    assert recorder.count("reconnecting") >= 1


# Short-lived tokens, with margins a login can meet on a loaded machine: the server checks
# passwords with production's hasher (about a second of CPU each when two cores are busy).
SHORT_TOKEN_SECONDS = 10
EXPIRY_WARNING_SECONDS = 6


@pytest.fixture(scope="module")
def short_token_server():
    env = {
        "JWT_ACCESS_LIFETIME_SECONDS": str(SHORT_TOKEN_SECONDS),
        "NOTIFICATIONS_TOKEN_EXPIRY_WARNING_SECONDS": str(EXPIRY_WARNING_SECONDS),
    }
    with DemoServer(env=env) as live:
        yield live


async def test_the_token_is_refreshed_in_band_before_it_expires(short_token_server):
    server = short_token_server
    email = f"py-refresh-{uuid.uuid4().hex[:8]}@example.com"
    password = "lantern-orbit-quiet-5150"  # unlike the email: the similarity check
    await asyncio.to_thread(server.register, email, password)
    calls = []

    async def get_token():
        calls.append(1)
        return (await asyncio.to_thread(server.login, email, password))["access"]

    client = NotificationClient(
        server.ws_url, get_token=get_token, refresh_before=EXPIRY_WARNING_SECONDS
    )
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    await asyncio.sleep(SHORT_TOKEN_SECONDS + 2)  # past the first token's lifetime
    assert client.state == "connected"
    await recorder.stop()
    assert recorder.count("connected") == 1  # never closed 4002, never reconnected
    assert len(calls) >= 2  # the first token, then at least one in-band refresh


# --- transports ------------------------------------------------------------------------------


def test_the_stream_url_sits_next_to_the_socket_url():
    assert stream_url_for("wss://h.example/api/v1/notifications/ws/") == (
        "https://h.example/api/v1/notifications/stream"
    )
    assert stream_url_for("ws://127.0.0.1:8000/api/v1/notifications/ws") == (
        "http://127.0.0.1:8000/api/v1/notifications/stream"
    )
    with pytest.raises(ValueError, match="transport"):
        NotificationClient("ws://h/ws", get_token=lambda: "t", transport="polling")


@pytest.mark.parametrize("mode", ["drop", "refuse"])
async def test_auto_falls_back_to_the_stream_and_returns_to_the_socket_without_loss(server, mode):
    user = new_user(server)
    with UpgradeBlockingProxy(server.port, mode=mode) as proxy:
        client = NotificationClient(
            f"ws://127.0.0.1:{proxy.port}/api/v1/notifications/ws",
            get_token=lambda: user["access"],
            backoff_initial=0.05,
            backoff_max=0.2,
            websocket_retry_interval=1.5,
        )
        recorder = Recorder(client)
        await recorder.until(lambda: client.state == "connected")
        assert client.active_transport == "sse"
        # One refused upgrade is enough; dropped ones count two in a row.
        assert proxy.blocked == (1 if mode == "refuse" else 2)
        await send(server, user, "email_received")
        await recorder.until(lambda: len(recorder.events) == 1)

        proxy.blocking = False
        await recorder.until(lambda: client.active_transport == "websocket")
        await recorder.until(lambda: client.state == "connected")
        await send(server, user, "draft_ready")
        await recorder.until(lambda: len(recorder.events) == 2)
        await recorder.stop()
    connected = [c.transport for c in recorder.states if c.state == "connected"]
    assert connected == ["sse", "websocket"]
    assert [event["id"] for event in recorder.events] == [1, 2]


async def test_websocket_only_never_falls_back(server):
    user = new_user(server)
    with UpgradeBlockingProxy(server.port, mode="refuse") as proxy:
        client = NotificationClient(
            f"ws://127.0.0.1:{proxy.port}/api/v1/notifications/ws",
            get_token=lambda: user["access"],
            backoff_initial=0.02,
            backoff_max=0.05,
            transport="websocket",
        )
        recorder = Recorder(client)
        await recorder.until(lambda: recorder.count("reconnecting") >= 4)
        await recorder.stop()
    assert recorder.count("connected") == 0
    assert {change.transport for change in recorder.states} == {"websocket"}


async def test_over_the_stream_a_token_about_to_expire_is_replaced_without_loss(
    short_token_server,
):
    server = short_token_server
    email = f"py-sse-refresh-{uuid.uuid4().hex[:8]}@example.com"
    password = "lantern-orbit-quiet-5150"  # unlike the email: the similarity check
    await asyncio.to_thread(server.register, email, password)

    async def get_token():
        return (await asyncio.to_thread(server.login, email, password))["access"]

    client = NotificationClient(server.ws_url, get_token=get_token, transport="sse")
    recorder = Recorder(client)
    await recorder.until(lambda: client.state == "connected")
    await asyncio.sleep(SHORT_TOKEN_SECONDS + 2)  # past the first token's lifetime
    # A stream resumes on a new token each time token_expiring comes: at this moment it may be
    # between two streams, so wait for the next to open.
    await recorder.until(lambda: client.state == "connected", timeout=EXPIRY_WARNING_SECONDS)
    await recorder.stop()
    # token_expiring made it resume on a new stream with a new token: never a 4002.
    assert recorder.count("connected") >= 2
    assert recorder.count("auth_failed") == 0
    assert not [c for c in recorder.states if c.close_code == 4002]
