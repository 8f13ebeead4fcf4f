"""Per-client limits in process: unauthenticated sockets and new sockets per client address
(the ASGI scope's client), IPv6 grouped by /64, and the bounded memory of the rate buckets."""

import asyncio
import time

import pytest

from notifications.realtime import connections
from notifications.realtime.connections import ConnectRates, registry
from tests.conftest import access_token_for
from tests.support.ws import communicator, expect_close

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


def communicator_from(host: str, port: int = 40000):
    comm = communicator()
    comm.scope["client"] = (host, port)  # as the server (uvicorn) fills it in
    return comm


async def attempt(host: str):
    """Open a socket from `host`: the communicator when accepted, None when refused (403)."""
    comm = communicator_from(host)
    accepted, _ = await comm.connect(timeout=5)
    if not accepted:
        # The server then reports the connection gone, as uvicorn does after its 403.
        await comm.send_input({"type": "websocket.disconnect", "code": 1006})
        await comm.wait(5)
        return None
    return comm


async def authenticate(comm, user) -> None:
    await comm.send_json_to({"token": access_token_for(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "connected"


@pytest.fixture
def limits(settings):
    settings.NOTIFICATIONS_MAX_PENDING = 100
    settings.NOTIFICATIONS_MAX_PENDING_PER_IP = 3
    settings.NOTIFICATIONS_CONNECT_RATE_PER_IP = 0  # off unless a test turns it on
    return settings


async def test_one_address_holds_at_most_its_share_of_unauthenticated_sockets(limits, user):
    waiting = [await attempt("203.0.113.7") for _ in range(3)]
    assert all(waiting)
    assert await attempt("203.0.113.7") is None
    elsewhere = await attempt("203.0.113.8")  # another client is not locked out
    assert elsewhere is not None
    assert registry.pending_by_address == {"203.0.113.7": 3, "203.0.113.8": 1}

    await authenticate(waiting[0], user)  # an authenticated socket no longer counts
    again = await attempt("203.0.113.7")
    assert again is not None
    await waiting[1].disconnect()  # nor does a closed one
    third = await attempt("203.0.113.7")
    assert third is not None
    assert await attempt("203.0.113.7") is None

    for comm in [waiting[0], waiting[2], again, third, elsewhere]:
        await comm.disconnect()
    assert registry.pending_by_address == {}
    assert not registry.pending


async def test_an_auth_timeout_frees_the_addresses_place(limits):
    limits.NOTIFICATIONS_AUTH_TIMEOUT = 0.3
    waiting = [await attempt("203.0.113.9") for _ in range(3)]
    assert await attempt("203.0.113.9") is None
    for comm in waiting:
        await expect_close(comm, 4001)
    assert registry.pending_by_address == {}
    comm = await attempt("203.0.113.9")
    assert comm is not None
    await comm.disconnect()


async def test_the_process_cap_still_applies_to_many_addresses(limits):
    limits.NOTIFICATIONS_MAX_PENDING = 4
    waiting = [await attempt(f"198.51.100.{n}") for n in range(1, 5)]
    assert all(waiting)
    assert await attempt("198.51.100.5") is None
    for comm in waiting:
        await comm.disconnect()


async def test_sockets_without_a_peer_address_count_only_against_the_process_cap(limits):
    waiting = [await attempt_without_address() for _ in range(5)]  # more than 3 per address
    assert all(waiting)
    assert registry.pending_by_address == {}
    for comm in waiting:
        await comm.disconnect()


async def attempt_without_address():
    comm = communicator()
    accepted, _ = await comm.connect(timeout=5)
    return comm if accepted else None


async def test_new_sockets_per_address_are_rate_limited_after_a_burst(limits, user):
    limits.NOTIFICATIONS_MAX_PENDING_PER_IP = 0  # off: only the rate limits here
    limits.NOTIFICATIONS_CONNECT_RATE_PER_IP = 1
    limits.NOTIFICATIONS_CONNECT_BURST_PER_IP = 4
    opened = []
    for _ in range(4):
        comm = await attempt("192.0.2.10")
        assert comm is not None
        await authenticate(comm, user)  # not pending: only the rate can refuse
        opened.append(comm)
    assert await attempt("192.0.2.10") is None
    assert await attempt("192.0.2.10") is None  # a refused attempt earns nothing back
    other = await attempt("192.0.2.11")
    assert other is not None
    await asyncio.sleep(1.1)  # one a second: one more after a second
    comm = await attempt("192.0.2.10")
    assert comm is not None
    assert await attempt("192.0.2.10") is None
    for socket in [*opened, other, comm]:
        await socket.disconnect()


async def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4(limits):
    limits.NOTIFICATIONS_MAX_PENDING_PER_IP = 2
    same_64 = [await attempt("2001:db8:1:2::a"), await attempt("2001:db8:1:2:ffff::b")]
    assert all(same_64)
    assert await attempt("2001:db8:1:2:1234:5678:9abc:def0") is None
    next_64 = await attempt("2001:db8:1:3::a")
    assert next_64 is not None
    mapped = [await attempt("::ffff:192.0.2.20"), await attempt("192.0.2.20")]
    assert all(mapped)
    assert await attempt("::ffff:192.0.2.20") is None
    assert set(registry.pending_by_address) == {
        "2001:db8:1:2::/64",
        "2001:db8:1:3::/64",
        "192.0.2.20",
    }
    for comm in [*same_64, next_64, *mapped]:
        await comm.disconnect()


def test_rate_buckets_of_idle_addresses_are_forgotten(settings):
    settings.NOTIFICATIONS_CONNECT_RATE_PER_IP = 50
    settings.NOTIFICATIONS_CONNECT_BURST_PER_IP = 1  # an idle bucket is full after 20 ms
    rates = ConnectRates()
    for n in range(5000):
        assert rates.allow(f"10.1.{n // 256}.{n % 256}")
    assert len(rates) > 1
    time.sleep(0.05)
    assert rates.allow("10.2.0.1")  # a new address sweeps the refilled buckets out
    assert len(rates) == 1


def test_rate_buckets_never_exceed_their_maximum(settings, monkeypatch):
    settings.NOTIFICATIONS_CONNECT_RATE_PER_IP = 0.001  # nothing refills during the test
    settings.NOTIFICATIONS_CONNECT_BURST_PER_IP = 1
    monkeypatch.setattr(connections, "MAX_TRACKED_ADDRESSES", 100)
    rates = ConnectRates()
    for n in range(1000):
        assert rates.allow(f"10.3.{n // 256}.{n % 256}")
    assert len(rates) == 100
    assert not rates.allow("10.3.3.231")  # the newest are the ones kept
