"""python -m bench.abuse: what an abusive client costs everyone else (docs/guarantees.md).

Runs `manage.py serve` as production does (DEBUG off, PostgreSQL, Redis, default limits and
throttles) on its own core and measures, from the other core:

- login-storm: /healthz latency and event delivery latency while idle, then while 16 threads
  of another process (niced, so it does not starve the measuring loop) send wrong passwords
  from one address; the ratios storm/idle, and what the storm was answered;
- lockout: 40 wrong passwords for one account from one address: the attempt that first
  answered 429;
- refresh-race: 20 concurrent refreshes of one refresh token: how many succeeded;
- pending-flood: 1,200 sockets that never authenticate from 127.0.0.2 while a client on
  127.0.0.3 connects and authenticates: its time to `connected`, and how many of the flood's
  upgrades were refused.

Every load is bounded in count and time and stays on the loopback range.
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.infra import (
    LOAD_CPU,
    ServerProcess,
    ThrowawayDatabase,
    pin,
    private_redis,
    production_environment,
    setup_django,
)
from notifications.realtime.open_files import raise_open_file_limit

PASSWORD = "bench-correct-password-7f3a9c"  # noqa: S105
STORM_THREADS = 16


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Http:
    """One keep-alive HTTP/1.1 connection from a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.port, self.source = port, source
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(self.source, 0)
        )

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")


# --- the run's resources ---------------------------------------------------------------------


class Rig:
    def __init__(self) -> None:
        self.db = ThrowawayDatabase()
        self.redis = None
        self.server: ServerProcess | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="reasonflow-abuse-"))

    def __enter__(self) -> "Rig":
        self.db.create()
        self.redis = private_redis()
        self.env = {
            **os.environ,
            **production_environment(database_url=self.db.url, redis_url=self.redis.url),
        }
        setup_django(self.env)
        return self

    def start_server(self) -> ServerProcess:
        self.stop_server()
        self.redis_flush()  # throttle state of the previous measurement
        self.server = ServerProcess("ours", self.env, self.workdir).start()
        return self.server

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def redis_flush(self) -> None:
        import redis

        redis.Redis.from_url(self.redis.url).flushall()

    def __exit__(self, *exc) -> None:
        from django.db import connections

        self.stop_server()
        connections.close_all()
        if self.redis is not None:
            self.redis.stop()
        self.db.drop()

    @staticmethod
    def user(email: str):
        from reasonflow.users.models import User

        return User.objects.create_user(email=email, password=PASSWORD)

    @staticmethod
    def tokens(user) -> dict:
        from reasonflow.users.services import user_issue_tokens

        return user_issue_tokens(user=user)


# --- login storm -----------------------------------------------------------------------------


def _storm_process(port: int, seconds: float, emails: list[str], out) -> None:
    pin(LOAD_CPU)
    os.nice(10)  # the attacker's CPU is elsewhere in production: never starve the measurer
    counts: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attack(index: int) -> None:
        client = Http(port)
        local: dict[int, int] = {}
        n = index
        while time.monotonic() < deadline:
            email = emails[n % len(emails)]
            n += STORM_THREADS
            status, _ = client.request(
                "POST", "/api/v1/auth/login", {"email": email, "password": "wrong-password"}
            )
            local[status] = local.get(status, 0) + 1
        with lock:
            for status, count in local.items():
                counts[status] = counts.get(status, 0) + count

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(STORM_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(counts)


async def _measure(port: int, token: str, user_id: str, seconds: float) -> dict:
    """Probe /healthz every 50 ms and publish an event every 100 ms to a listening socket."""
    import websockets
    from asgiref.sync import sync_to_async

    from notifications.publish import publish_event

    health: list[float] = []
    timeline: list[tuple[float, float]] = []
    published: dict[int, float] = {}
    received: dict[int, float] = {}
    url = f"ws://127.0.0.1:{port}/api/v1/notifications/ws"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"token": token}))
        assert json.loads(await ws.recv())["type"] == "connected"

        async def receive() -> None:
            # An event can reach the socket before its publisher has noted the start time:
            # match them up afterwards.
            async for frame in ws:
                received[json.loads(frame).get("id")] = time.perf_counter()

        def publish() -> None:
            started = time.perf_counter()
            event = publish_event(user_id=user_id, event_type="email_received", data=_sample())
            published[event.event_id] = started

        reader = asyncio.ensure_future(receive())
        client = Http(port)
        deadline = time.monotonic() + seconds
        tick = 0
        while time.monotonic() < deadline:
            if tick % 2 == 0:
                await sync_to_async(publish, thread_sensitive=False)()
            started = time.perf_counter()
            status, _ = await asyncio.to_thread(client.request, "GET", "/healthz")
            if status == 200:
                health.append((time.perf_counter() - started) * 1000)
                timeline.append((time.monotonic() - (deadline - seconds), health[-1]))
            tick += 1
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)  # the last events' way to the socket
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    delivery = [
        (received[event_id] - started) * 1000
        for event_id, started in published.items()
        if event_id in received
    ]
    return {
        "healthz_ms": {"p50": percentile(health, 0.5), "p99": percentile(health, 0.99)},
        "delivery_ms": {"p50": percentile(delivery, 0.5), "p99": percentile(delivery, 0.99)},
        "probes": len(health),
        "healthz_p50_by_second": [
            round(percentile([ms for at, ms in timeline if int(at) == second], 0.5) or 0, 1)
            for second in range(int(seconds))
        ],
        "events": f"{len(delivery)}/{len(published)}",
    }


def _sample() -> dict:
    import uuid

    return {"email_id": str(uuid.uuid4()), "subject": "bench", "sender": "a@bench.invalid"}


def login_storm(rig: Rig, seconds: float) -> dict:
    server = rig.start_server()
    listener = rig.user(f"listener-{secrets.token_hex(3)}@bench.invalid")
    victims = [rig.user(f"victim-{i}-{secrets.token_hex(3)}@bench.invalid") for i in range(8)]
    emails = [v.email for v in victims] + [f"nobody-{i}@bench.invalid" for i in range(8)]
    token = rig.tokens(listener)["access"]
    idle = asyncio.run(_measure(server.port, token, str(listener.id), seconds))
    queue = multiprocessing.get_context("fork").Queue()
    storm = multiprocessing.get_context("fork").Process(
        target=_storm_process, args=(server.port, seconds + 2, emails, queue)
    )
    cpu_before = server.sample().cpu
    storm.start()
    time.sleep(1)  # let the storm reach full speed
    during = asyncio.run(_measure(server.port, token, str(listener.id), seconds))
    counts = queue.get(timeout=seconds + 60)
    storm.join()
    server_cpu = server.sample().cpu - cpu_before
    answered = sum(counts.values())

    def ratio(kind: str) -> float | None:
        a, b = during[kind]["p50"], idle[kind]["p50"]
        return None if not a or not b else round(a / b, 2)

    return {
        "idle": idle,
        "storm": during,
        "storm_answers": {str(k): v for k, v in sorted(counts.items())},
        "storm_requests_per_s": round(answered / (seconds + 2), 1),
        "server_cpu_share": round(server_cpu / (seconds + 2), 2),
        "healthz_p50_ratio": ratio("healthz_ms"),
        "delivery_p50_ratio": ratio("delivery_ms"),
    }


# --- lockout and refresh race ----------------------------------------------------------------


def lockout(rig: Rig, attempts: int = 40) -> dict:
    server = rig.start_server()
    user = rig.user(f"lockout-{secrets.token_hex(3)}@bench.invalid")
    client = Http(server.port)
    statuses = [
        client.request("POST", "/api/v1/auth/login", {"email": user.email, "password": "wrong"})[0]
        for _ in range(attempts)
    ]
    first = next((i + 1 for i, status in enumerate(statuses) if status == 429), None)
    return {"attempts": attempts, "first_429_at": first, "statuses": _tally(statuses)}


def refresh_race(rig: Rig, concurrent: int = 20) -> dict:
    server = rig.start_server()
    user = rig.user(f"refresh-{secrets.token_hex(3)}@bench.invalid")
    refresh = rig.tokens(user)["refresh"]
    clients = [Http(server.port) for _ in range(concurrent)]
    barrier = threading.Barrier(concurrent)

    def race(client: Http) -> int:
        barrier.wait()
        return client.request("POST", "/api/v1/auth/refresh", {"refresh": refresh})[0]

    with ThreadPoolExecutor(concurrent) as pool:
        statuses = list(pool.map(race, clients))
    return {
        "concurrent": concurrent,
        "succeeded": statuses.count(200),
        "statuses": _tally(statuses),
    }


def _tally(statuses: list[int]) -> dict[str, int]:
    return {str(s): statuses.count(s) for s in sorted(set(statuses))}


# --- pending flood ---------------------------------------------------------------------------


async def _pending_flood(port: int, token: str, flood: int) -> dict:
    import websockets

    url = f"ws://127.0.0.1:{port}/api/v1/notifications/ws"
    opened: list = []
    refused = failed = 0

    async def open_one() -> None:
        nonlocal refused, failed
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind(("127.0.0.2", 0))
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            opened.append(await websockets.connect(url, sock=sock, open_timeout=20))
        except websockets.InvalidStatus:
            refused += 1
        except (OSError, TimeoutError, websockets.WebSocketException):
            failed += 1

    started = time.perf_counter()
    for start in range(0, flood, 100):
        await asyncio.gather(*(open_one() for _ in range(min(100, flood - start))))
    flood_seconds = time.perf_counter() - started

    sock = socket.socket()
    sock.setblocking(False)
    sock.bind(("127.0.0.3", 0))
    started = time.perf_counter()
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    try:
        async with websockets.connect(url, sock=sock, open_timeout=20) as ws:
            await ws.send(json.dumps({"token": token}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20)).get("type")
    except websockets.InvalidStatus as exc:
        frame = f"refused: HTTP {exc.response.status_code}"
    other_ms = (time.perf_counter() - started) * 1000
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {
        "flood": flood,
        "flood_open": len(opened),
        "flood_refused_403": refused,
        "flood_failed_otherwise": failed,
        "flood_seconds": round(flood_seconds, 2),
        "other_address_connected_ms": round(other_ms, 1),
        "other_address_got": frame,
    }


def pending_flood(rig: Rig, flood: int = 1200) -> dict:
    server = rig.start_server()
    user = rig.user(f"pending-{secrets.token_hex(3)}@bench.invalid")
    return asyncio.run(_pending_flood(server.port, rig.tokens(user)["access"], flood))


SCENARIOS = {
    "lockout": lambda rig, args: lockout(rig),
    "refresh-race": lambda rig, args: refresh_race(rig),
    "pending-flood": lambda rig, args: pending_flood(rig),
    "login-storm": lambda rig, args: login_storm(rig, args.seconds),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.abuse", description=__doc__.splitlines()[0]
    )
    parser.add_argument("scenario", nargs="*", help=f"any of {', '.join(SCENARIOS)} (all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per login-storm phase")
    args = parser.parse_args(argv)
    unknown = set(args.scenario) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    pin(LOAD_CPU)
    raise_open_file_limit()
    results = {}
    with Rig() as rig:
        for name in args.scenario or list(SCENARIOS):
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            results[name] = SCENARIOS[name](rig, args)
            print(json.dumps({name: results[name]}, indent=2), flush=True)
    return results


if __name__ == "__main__":
    main()
