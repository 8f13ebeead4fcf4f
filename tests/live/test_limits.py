"""Per-client limits and revocation against a real server process (`manage.py serve` on
127.0.0.1, sharing the test database): clients come from other loopback addresses, and
changes are made in this process, where no revocation message reaches the server's layer."""

import asyncio
import json
import time

import pytest
import websockets
from asgiref.sync import sync_to_async
from websockets.exceptions import InvalidStatus

from reasonflow.users.services import user_change_password, user_issue_tokens, user_revoke_tokens
from tests.support.live import LiveServer
from tests.support.live_clients import close_code
from tests.support.shared_db import live_database_url

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ATTACKER, VICTIM = "127.0.0.2", "127.0.0.3"


def shared_server(**env: str) -> LiveServer:
    """A server on the test database and the in-memory layer, trusting no proxy unless told."""
    server = LiveServer(env={"DATABASE_URL": live_database_url(), "REDIS_URL": "", **env})
    for name in ("REDIS_SENTINELS", "FORWARDED_ALLOW_IPS"):
        if name not in env:
            server.env.pop(name, None)
    return server


async def attempt(url: str, source: str, forwarded_for: str | None = None):
    """Open a socket from `source`: the connection when accepted, None when refused (403)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    try:
        return await websockets.connect(
            url, open_timeout=20, local_addr=(source, 0), additional_headers=headers
        )
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return None


async def authenticate(ws, token: str) -> dict:
    await ws.send(json.dumps({"token": token}))
    connected = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert connected["type"] == "connected", connected
    return connected


async def accepted_of(attempts) -> list:
    sockets = await asyncio.gather(*attempts)
    return [ws for ws in sockets if ws is not None]


async def close_all(sockets) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# --- per-client limits ------------------------------------------------------------------------


async def test_an_address_holding_many_pending_sockets_does_not_lock_out_another(make_user):
    user = await sync_to_async(make_user)()
    token = (await sync_to_async(user_issue_tokens)(user=user))["access"]
    env = {"NOTIFICATIONS_MAX_PENDING": "100", "NOTIFICATIONS_MAX_PENDING_PER_IP": "20"}
    with shared_server(**env) as server:
        held = await accepted_of(attempt(server.ws_url, ATTACKER) for _ in range(150))
        assert len(held) == 20  # the rest refused with 403 before accept
        started = time.monotonic()
        ws = await attempt(server.ws_url, VICTIM)
        assert ws is not None, "another address was locked out"
        assert (await authenticate(ws, token))["user_id"] == str(user.pk)
        assert time.monotonic() - started < 5
        assert await attempt(server.ws_url, ATTACKER) is None  # still full
        await close_all([*held, ws])
        # 131 refusals, a few log lines (each says how many refusals it stands for).
        refusals = [line for line in server.log().splitlines() if "websocket refused" in line]
        assert 1 <= len(refusals) <= 6, refusals


async def test_x_forwarded_for_counts_only_when_a_trusted_proxy_sends_it():
    env = {
        "FORWARDED_ALLOW_IPS": "127.0.0.1",  # the proxy
        "NOTIFICATIONS_MAX_PENDING_PER_IP": "3",
        "NOTIFICATIONS_CONNECT_RATE_PER_IP": "0",
    }
    with shared_server(**env) as server:
        url = server.ws_url
        # A client that is no proxy cannot spread itself over made-up addresses ...
        spoofed = await accepted_of(
            attempt(url, ATTACKER, forwarded_for=f"198.51.100.{n}") for n in range(1, 6)
        )
        assert len(spoofed) == 3
        # ... while the proxy's clients are told apart by the header it sets,
        proxied = await accepted_of(
            attempt(url, "127.0.0.1", forwarded_for=f"203.0.113.{n}") for n in range(1, 7)
        )
        assert len(proxied) == 6
        # and one of them is limited like any client.
        one_client = await accepted_of(
            attempt(url, "127.0.0.1", forwarded_for="192.0.2.1, 203.0.113.99") for _ in range(5)
        )
        assert len(one_client) == 3
        await close_all([*spoofed, *proxied, *one_client])
        assert "ignored X-Forwarded-For from 127.0.0.2" in server.log()


async def test_by_default_no_proxy_is_trusted_with_x_forwarded_for():
    env = {"NOTIFICATIONS_MAX_PENDING_PER_IP": "3", "NOTIFICATIONS_CONNECT_RATE_PER_IP": "0"}
    with shared_server(**env) as server:
        claimed = await accepted_of(
            attempt(server.ws_url, "127.0.0.1", forwarded_for=f"198.51.100.{n}")
            for n in range(1, 6)
        )
        assert len(claimed) == 3  # all of them counted against 127.0.0.1
        await close_all(claimed)


async def test_new_sockets_from_one_address_are_rate_limited():
    env = {
        "NOTIFICATIONS_MAX_PENDING_PER_IP": "0",
        "NOTIFICATIONS_CONNECT_RATE_PER_IP": "0.2",  # one more every 5 s
        "NOTIFICATIONS_CONNECT_BURST_PER_IP": "10",
    }
    with shared_server(**env) as server:
        for _ in range(10):
            ws = await attempt(server.ws_url, ATTACKER)
            assert ws is not None
            await ws.close()  # closed at once: only the rate can refuse the next one
        assert await attempt(server.ws_url, ATTACKER) is None
        other = await attempt(server.ws_url, VICTIM)
        assert other is not None
        await other.close()


# --- revocation on the in-memory layer ---------------------------------------------------------

STRONG = "quiet-lantern-orbit-73"


def deactivate(user) -> None:
    user.is_active = False
    user.save()


REVOCATIONS = {
    "deactivation": deactivate,
    "deletion": lambda user: user.delete(),
    "logout": lambda user: user_revoke_tokens(user=user),
    "password change": lambda user: user_change_password(user=user, new_password=STRONG),
}


async def test_a_revocation_in_another_process_closes_sockets_on_the_in_memory_layer(make_user):
    # The server's catch-up interval is its default (5 s): "within a few seconds".
    users = {kind: await sync_to_async(make_user)() for kind in [*REVOCATIONS, "bystander"]}
    tokens = {
        kind: (await sync_to_async(user_issue_tokens)(user=user))["access"]
        for kind, user in users.items()
    }
    with shared_server() as server:
        sockets = {}
        for kind, token in tokens.items():
            ws = await attempt(server.ws_url, VICTIM)
            await authenticate(ws, token)
            sockets[kind] = ws
        started = time.monotonic()
        for kind, revoke in REVOCATIONS.items():
            await sync_to_async(revoke)(users[kind])

        async def closed_after(kind: str) -> tuple[int, float]:
            code = await close_code(sockets[kind], timeout=15)
            return code, time.monotonic() - started

        results = dict(
            zip(REVOCATIONS, await asyncio.gather(*map(closed_after, REVOCATIONS)), strict=True)
        )
        assert {kind: code for kind, (code, _) in results.items()} == dict.fromkeys(
            REVOCATIONS, 4002
        )
        print("\nclosed after: " + ", ".join(f"{k} {s:.2f} s" for k, (_, s) in results.items()))
        assert max(seconds for _, seconds in results.values()) < 7, results
        bystander = sockets["bystander"]
        await bystander.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(bystander.recv(), 10)) == {"type": "pong"}
        await bystander.close()
