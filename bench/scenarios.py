"""The scenarios (connections, throughput, fanout, mixed; rest and publish_api live in modules
of their own) and the targets they run against.

A run owns a throwaway PostgreSQL database and a private Redis (and, with --before, the checkout
and database of an earlier revision). Each (scenario, target) pair gets a fresh server process
pinned to SERVER_CPU and fresh publisher processes pinned to LOAD_CPU, next to this process (the
load generator). Django is set up here only to create the users and mint their tokens, on the
same DATABASE_URL as the server.
"""

import asyncio
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen, publish_api, rest
from bench.infra import (
    LOAD_CPU,
    ROOT,
    SSE,
    EarlierRevision,
    ServerProcess,
    ThrowawayDatabase,
    postgres_cpu,
    private_redis,
    production_environment,
    redis_cpu,
    setup_django,
)

P99_LIMIT_MS = 50.0
SCENARIOS = ("connections", "throughput", "fanout", "mixed", "rest", "publish_api")
FLOOR_SKIPS = {"mixed", "rest", "publish_api"}  # the floor has no REST API
# The stock consumer serves the same Django REST API as ours.
STOCK_SKIPS = {"rest", "publish_api"}
# `rest` and `publish_api` write their rows with this checkout's ORM into the run's database;
# an earlier revision (--before) serves a database of its own.
BEFORE_SKIPS = {"rest", "publish_api"}
# Over server-sent events only the delivery side differs: REST is the same server's.
SSE_SKIPS = {"mixed", "rest", "publish_api"}


@dataclass
class Options:
    users: int = 1000
    connections: int = 10_000
    rates: list[int] = field(default_factory=lambda: [500, 1000, 2000, 3000, 4000, 6000, 8000])
    duration: float = 4.0
    fanout_sockets: int = 500
    fanout_repeats: int = 50
    mixed_users: int = 200
    mixed_rates: list[int] = field(default_factory=lambda: [50, 100, 200])
    http_concurrency: int = 8
    rest_requests: int = 1000
    rest_rate: float = 100.0
    publish_events: int = 4000
    concurrency: int = 500
    publishers: int = 2
    batch: int = 1
    publisher_cpu: str = "load"  # "load": pinned next to the load generator; "any": unpinned
    layer: str = "pubsub"
    server_env: dict[str, str] = field(default_factory=dict)
    compare_stock: bool = False
    sse: bool = False  # also read our server over server-sent events: the `sse` target
    before: str | None = None  # a git revision: also run the project as it was there
    drain: float = 5.0

    @property
    def before_kind(self) -> str | None:
        return f"ours@{self.before}" if self.before else None

    def sockets(self, scenarios: list[str]) -> int:
        """The most sockets one of these scenarios holds open at once: each is an open file
        in the load generator and in the server."""
        held = {
            "connections": self.connections,
            "throughput": self.users,
            "fanout": self.fanout_sockets,
            "mixed": self.mixed_users,
        }
        return max((held.get(scenario, 0) for scenario in scenarios), default=0)

    def our_targets(self) -> list[str]:
        return ["ours", self.before_kind] if self.before else ["ours"]

    def targets(self) -> list[str]:
        theirs = ["stock", "floor"] if self.compare_stock else []
        return [*self.our_targets(), *([SSE] if self.sse else []), *theirs]


# --- the run's resources -------------------------------------------------------------------


class Bench:
    """A database, a Redis, users with tokens, and the environment every process shares."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.workdir = Path(tempfile.mkdtemp(prefix="reasonflow-bench-"))
        self.db = ThrowawayDatabase()
        self.redis = None
        self.env: dict[str, str] = {}
        self._users: list[tuple[str, str]] = []
        self._special: dict[str, tuple[str, str]] = {}
        self.before = EarlierRevision(options.before) if options.before else None

    def setup(self) -> "Bench":
        self.db.create()
        self.redis = private_redis()
        self.env = production_environment(
            database_url=self.db.url,
            redis_url=self.redis.url,
            CHANNEL_LAYER=self.options.layer,
            JWT_ACCESS_LIFETIME_SECONDS="7200",
            # One user holds every fanout socket; the connection ramp keeps up to
            # `concurrency` sockets unauthenticated at once.
            NOTIFICATIONS_MAX_CONNECTIONS_PER_USER=str(
                max(20, self.options.fanout_sockets, self.options.connections)
            ),
            NOTIFICATIONS_MAX_PENDING=str(max(1000, self.options.connections)),
            # The load comes from a few loopback addresses (loadgen.LOOPBACK_SOURCES), not
            # from a crowd: no per-address limits.
            NOTIFICATIONS_MAX_PENDING_PER_IP="0",
            NOTIFICATIONS_CONNECT_RATE_PER_IP="0",
            # One service key publishes everything of `publish_api`.
            NOTIFICATIONS_PUBLISH_RATE="1000000/s",
            # Approved drafts go nowhere: an SMTP server's cost is not the server's.
            EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
        )
        setup_django(self.env)
        if self.before is not None:
            self.before.setup(self.server_env(self.options.before_kind))
        return self

    def close(self) -> None:
        if self.before is not None:
            self.before.close()
        from django.db import connections

        connections.close_all()
        if self.redis is not None:
            self.redis.stop()
        self.db.drop()

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis.url).flushall()

    def _create(self, count: int, prefix: str, **extra) -> list[tuple[str, str]]:
        from reasonflow.users.models import User
        from reasonflow.users.services import user_issue_tokens

        tag = secrets.token_hex(3)
        users = [
            User(email=f"{prefix}-{tag}-{index}@bench.invalid", **extra) for index in range(count)
        ]
        for user in users:
            user.set_unusable_password()
        User.objects.bulk_create(users, batch_size=1000)
        return [(str(user.id), user_issue_tokens(user=user)["access"]) for user in users]

    def users(self, count: int) -> list[tuple[str, str]]:
        """`count` (user id, access token) pairs, created on first need and reused."""
        if len(self._users) < count:
            self._users += self._create(count - len(self._users), "load")
        return self._users[:count]

    def special(self, name: str, **extra) -> tuple[str, str]:
        """A dedicated user (the fanout user, the staff user of `mixed`)."""
        if name not in self._special:
            self._special[name] = self._create(1, name, **extra)[0]
        return self._special[name]

    def prepare(self, scenarios: list[str]) -> None:
        """Create every user the scenarios need now, outside the event loop (sync ORM)."""
        options = self.options
        needed = {
            "connections": min(options.users, options.connections),
            "throughput": options.users,
            "mixed": options.mixed_users,
        }
        self.users(max((needed.get(name, 0) for name in scenarios), default=0))
        if "fanout" in scenarios:
            self.special("fanout")
        if "mixed" in scenarios:
            self.special("staff", is_staff=True)
        if self.before is not None:
            from reasonflow.users.models import User

            self.before.copy_users(self.db.url, User._meta.db_table)

    def server_env(self, kind: str) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if kind in (*self.options.our_targets(), SSE):
            env.update(self.options.server_env)
        if kind == self.options.before_kind:
            env["DATABASE_URL"] = self.before.db.url
        return env

    def root(self, kind: str) -> Path:
        """Where a target's server and publishers run from: an earlier revision's checkout,
        or this one."""
        return self.before.root if kind == self.options.before_kind else ROOT


# --- a target: one server process and its publishers -------------------------------------


class PublisherProcess:
    def __init__(
        self, mode: str, env: dict[str, str], workdir: Path, index: int, cpu: int, root: Path
    ) -> None:
        self.out = workdir / f"publisher-{os.getpid()}-{index}.json"
        self.index = index
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.publisher", "--mode", mode, "--cpu", str(cpu)],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        line = self.process.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError("the publisher did not start")

    def run(self, users: list[str], rate: float, count: int, batch: int) -> dict:
        command = {
            "op": "run",
            "users": users,
            "rate": rate,
            "count": count,
            "batch": batch,
            "seed": self.index,
            "out": str(self.out),
        }
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the publisher exited")
        reply = json.loads(line)
        reply["records"] = [tuple(record) for record in json.loads(self.out.read_text())]
        return reply

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.out.unlink(missing_ok=True)


class Target:
    """The server under test (`ours`, `ours@REV`, `stock` or `floor`) with the publishers that
    feed it, both from the same revision."""

    def __init__(self, bench: Bench, kind: str) -> None:
        self.bench = bench
        self.kind = kind
        self.server: ServerProcess | None = None
        self.publishers: list[PublisherProcess] = []

    async def __aenter__(self) -> "Target":
        self.bench.flush_redis()
        env = self.bench.server_env(self.kind)
        root = self.bench.root(self.kind)
        mode = "floor" if self.kind == "floor" else "publish"
        count = max(1, self.bench.options.publishers)
        cpu = LOAD_CPU if self.bench.options.publisher_cpu == "load" else -1
        self.publishers = [
            PublisherProcess(mode, env, self.bench.workdir, index, cpu, root)
            for index in range(count)
        ]
        self.server = ServerProcess(self.kind, env, self.bench.workdir, root)
        await asyncio.to_thread(self.server.start)
        for publisher in self.publishers:
            await asyncio.to_thread(publisher.wait_ready)
        return self

    async def __aexit__(self, *exc) -> None:
        for publisher in self.publishers:
            publisher.stop()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    async def publish(self, users: list[str], rate: float, count: int) -> dict:
        """Publish `count` events over `users` at `rate`/s in all. Each publisher draws its
        users at random from all of them, so producers overlap as in production (and several
        write to one user's counter at once). The floor numbers events per publisher and an
        earlier revision may deadlock on overlap (the reason for the before-commit numbering),
        so they split the users instead."""
        active = self.publishers[: max(1, min(len(self.publishers), len(users)))]
        if self.kind in ("floor", self.bench.options.before_kind):
            shares = [users[index :: len(active)] for index in range(len(active))]
        else:
            shares = [users] * len(active)
        counts = [
            count // len(active) + (1 if index < count % len(active) else 0)
            for index in range(len(active))
        ]
        batch = self.bench.options.batch
        replies = await asyncio.gather(
            *(
                asyncio.to_thread(pub.run, share, rate / len(active), n, batch)
                for pub, share, n in zip(active, shares, counts, strict=True)
                if n
            )
        )
        return {
            "records": [record for reply in replies for record in reply["records"]],
            "elapsed": max(reply["elapsed"] for reply in replies),
            "cpu": sum(reply["cpu"] for reply in replies),
        }


# --- measuring -----------------------------------------------------------------------------


class Meter:
    """Server CPU/RSS (from /proc), Redis CPU (INFO) and PostgreSQL's CPU (every process, from
    /proc) between start() and stop()."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def start(self) -> "Meter":
        self.server = self.target.server.sample()
        self.redis = redis_cpu(self.target.bench.redis.url)
        self.postgres = postgres_cpu()
        return self

    def stop(self, *, delivered: int, published: int, publisher_cpu: float = 0.0) -> dict:
        """The step's figures; `publisher_cpu` (seconds) is what producing the events cost
        outside the server (publisher processes), for the whole-system figure."""
        server = self.target.server.sample()
        redis_used = redis_cpu(self.target.bench.redis.url) - self.redis
        postgres = postgres_cpu()
        postgres_used = None if postgres is None else postgres - self.postgres
        cpu = server.cpu - self.server.cpu
        system = cpu + publisher_cpu + redis_used + (postgres_used or 0.0)
        wall = server.at - self.server.at
        return {
            "server_cpu_s": round(cpu, 3),
            "server_cpu_util": round(cpu / wall, 3) if wall > 0 else 0.0,
            "server_cpu_us_per_delivered": round(cpu / delivered * 1e6, 1) if delivered else None,
            "server_rss_mib": round(server.rss / 2**20, 1),
            "redis_cpu_us_per_published": (
                round(redis_used / published * 1e6, 1) if published else None
            ),
            "postgres_cpu_us_per_published": (
                round(postgres_used / published * 1e6, 1)
                if published and postgres_used is not None
                else None
            ),
            # What one event cost the whole system: server, publishers, Redis and PostgreSQL.
            "system_cpu_us_per_event": (round(system / published * 1e6, 1) if published else None),
        }


async def publish_step(
    target: Target,
    sockets: list[loadgen.BenchConnection],
    users: list[str],
    rate: float,
    count: int,
) -> dict:
    """Publish, wait for the sockets to drain, and report one step."""
    loadgen.reset(sockets)
    meter = Meter(target).start()
    own = os.times()
    published = await target.publish(users, rate, count)
    sockets_per_user: dict[str, int] = {}
    for sock in sockets:
        sockets_per_user[sock.user] = sockets_per_user.get(sock.user, 0) + 1
    expected = sum(sockets_per_user.get(user, 0) for user, _, _ in published["records"])
    await loadgen.wait_for_deliveries(sockets, expected, target.bench.options.drain)
    delivery = loadgen.tally(sockets, published["records"])
    step = {"rate": rate, **delivery.summary()}
    step["publish_rate"] = round(count / published["elapsed"], 1) if published["elapsed"] else 0
    step["publisher_cpu_us_per_event"] = round(published["cpu"] / count * 1e6, 1)
    step.update(
        meter.stop(delivered=delivery.delivered, published=count, publisher_cpu=published["cpu"])
    )
    # The load side's core (this process and the publishers): near 1.0, the numbers above
    # measure the load generator, not the server.
    now = os.times()
    load_cpu = now.user + now.system - own.user - own.system + published["cpu"]
    wall = now.elapsed - own.elapsed  # os.times() ticks: a tiny step can read 0
    step["load_cpu_util"] = round(load_cpu / wall, 2) if wall > 0 else None
    return step


async def open_measured(target: Target, credentials: list[tuple[str, str]]) -> tuple[list, dict]:
    """Open and authenticate sockets (streams, for the sse target); report connect+auth rate
    and RSS per socket."""
    if target.kind == SSE:
        url, kind = target.server.stream_url, loadgen.BenchStream
    else:
        url, kind = target.server.ws_url, loadgen.BenchSocket
    # One socket first, so lazily loaded code and the first database connection are not
    # counted as the sockets' memory.
    warm, _, _ = await loadgen.open_sockets(url, credentials[:1], concurrency=1, kind=kind)
    loadgen.close_sockets(warm)
    await asyncio.sleep(0.5)
    before = target.server.sample()
    sockets, failed, elapsed = await loadgen.open_sockets(
        url, credentials, concurrency=target.bench.options.concurrency, kind=kind
    )
    await asyncio.sleep(1.0)
    after = target.server.sample()
    opened = len(sockets)
    return sockets, {
        "sockets": opened,
        "failed": failed,
        "connect_auth_per_s": round(opened / elapsed, 1) if elapsed else 0.0,
        "connect_cpu_us_per_socket": round((after.cpu - before.cpu) / opened * 1e6, 1)
        if opened
        else None,
        "rss_before_mib": round(before.rss / 2**20, 1),
        "rss_after_mib": round(after.rss / 2**20, 1),
        "rss_per_socket_kib": round((after.rss - before.rss) / opened / 1024, 1)
        if opened
        else None,
        "server_cpus": sorted(os.sched_getaffinity(target.server.pid)),
    }


def passed(step: dict) -> bool:
    p99 = step["latency_ms"]["p99"]
    return (
        step["lost"] == 0
        and step["duplicated"] == 0
        and step["out_of_order"] == 0
        and not math.isnan(p99)
        and p99 <= P99_LIMIT_MS
    )


# --- scenarios -----------------------------------------------------------------------------


async def connections(target: Target) -> dict:
    options = target.bench.options
    users = target.bench.users(min(options.users, options.connections))
    credentials = [users[index % len(users)] for index in range(options.connections)]
    sockets, opened = await open_measured(target, credentials)
    try:
        # Every socket still listens: one event per user reaches each of its sockets.
        check = await publish_step(
            target, sockets, [user for user, _ in users], rate=2000, count=len(users)
        )
    finally:
        loadgen.close_sockets(sockets)
    return {"open": opened, "check": check}


async def throughput(target: Target) -> dict:
    options = target.bench.options
    users = target.bench.users(options.users)
    user_ids = [user for user, _ in users]
    sockets, opened = await open_measured(target, users)
    steps, stopped = [], "all rates ran"
    try:
        await publish_step(target, sockets, user_ids, rate=200, count=200)  # warm-up
        for rate in options.rates:
            step = await publish_step(
                target, sockets, user_ids, rate=rate, count=max(1, int(rate * options.duration))
            )
            steps.append(step)
            if not passed(step):
                stopped = f"{rate}/s failed (loss, order or p99 > {P99_LIMIT_MS:g} ms)"
                break
            if step["publish_rate"] < 0.9 * rate:
                stopped = f"publisher-limited at {step['publish_rate']:.0f}/s of {rate}/s"
                break
    finally:
        loadgen.close_sockets(sockets)
    # A passing step counts at the rate actually published (the publisher may fall short).
    best = max((min(s["rate"], s["publish_rate"]) for s in steps if passed(s)), default=0)
    cpu_us = steps[-1]["server_cpu_us_per_delivered"] if steps else None
    return {
        "open": opened,
        "steps": steps,
        "stopped": stopped,
        "max_passing_rate": round(best),
        # What one server core could deliver at the last step's CPU cost per event.
        "server_core_capacity_per_s": round(1e6 / cpu_us) if cpu_us else None,
    }


async def fanout(target: Target) -> dict:
    options = target.bench.options
    user, token = target.bench.special("fanout")
    sockets, opened = await open_measured(target, [(user, token)] * options.fanout_sockets)
    last, first, lost = [], [], 0
    try:
        for _ in range(3):  # warm-up
            loadgen.reset(sockets)
            await target.publish([user], rate=1000, count=1)
            await loadgen.wait_for_deliveries(sockets, len(sockets), options.drain)
        meter = Meter(target).start()
        delivered, publisher_cpu = 0, 0.0
        for _ in range(options.fanout_repeats):
            loadgen.reset(sockets)
            published = await target.publish([user], rate=1000, count=1)
            publisher_cpu += published["cpu"]
            await loadgen.wait_for_deliveries(sockets, len(sockets), options.drain)
            delivery = loadgen.tally(sockets, published["records"])
            delivered += delivery.delivered
            lost += delivery.lost + delivery.duplicated
            if delivery.latencies:
                last.append(max(delivery.latencies) * 1000)
                first.append(min(delivery.latencies) * 1000)
            await asyncio.sleep(0.05)
        usage = meter.stop(
            delivered=delivered, published=options.fanout_repeats, publisher_cpu=publisher_cpu
        )
    finally:
        loadgen.close_sockets(sockets)
    return {
        "open": opened,
        "repeats": options.fanout_repeats,
        "delivered": delivered,
        "expected": options.fanout_repeats * len(sockets),
        "lost_or_duplicated": lost,
        "last_socket_ms": {
            "median": round(statistics.median(last), 2) if last else None,
            "p99": round(loadgen.percentile(last, 0.99), 2) if last else None,
            "max": round(max(last), 2) if last else None,
        },
        "first_socket_ms_median": round(statistics.median(first), 2) if first else None,
        **usage,
    }


async def mixed(target: Target) -> dict:
    """Staff REST requests (POST notifications/test) publish from inside the server while
    the sockets receive: the request thread's publish_event, its commit and the send."""
    options = target.bench.options
    users = target.bench.users(options.mixed_users)
    _, staff_token = target.bench.special("staff", is_staff=True)
    sockets, opened = await open_measured(target, users)
    clients = [rest.HttpClient(target.server.port) for _ in range(options.http_concurrency)]
    steps = []
    try:
        for rate in options.mixed_rates:
            steps.append(
                await _mixed_step(target, sockets, users, clients, staff_token, rate, options)
            )
    finally:
        for client in clients:
            client.close()
        loadgen.close_sockets(sockets)
    return {"open": opened, "steps": steps}


async def _mixed_step(target, sockets, users, clients, staff_token, rate, options) -> dict:
    loadgen.reset(sockets)
    count = max(1, int(rate * options.duration))
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    records, http_ms, errors = [], [], 0
    meter = Meter(target).start()

    async def worker(client: rest.HttpClient) -> None:
        nonlocal errors
        # Timed from when each request was due, not from when a client got to it: a server
        # that falls behind shows in the latencies instead of slowing the load down.
        while (item := await queue.get())[0] >= 0:
            index, due = item
            user = users[index % len(users)][0]
            try:
                status, raw = await client.request(
                    "POST",
                    "/api/v1/notifications/test",
                    staff_token,
                    {"user": user, "type": "draft_ready"},
                )
            except (OSError, ValueError, asyncio.IncompleteReadError):
                client.close()
                errors += 1
                continue
            http_ms.append((time.time() - due) * 1000)
            if status == 201:
                records.append((user, json.loads(raw)["event"]["id"], due))
            else:
                errors += 1

    workers = [asyncio.create_task(worker(client)) for client in clients]
    began, began_wall = time.perf_counter(), time.time()
    for index in range(count):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((index, began_wall + index / rate))
    for _ in workers:
        queue.put_nowait((-1, 0.0))
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - began
    await loadgen.wait_for_deliveries(sockets, len(records), options.drain)
    delivery = loadgen.tally(sockets, records)
    step = {"rate": rate, **delivery.summary()}
    step["requested_rate"] = rate
    step["request_rate"] = round(len(http_ms) / elapsed, 1)  # what was actually served
    step["http_errors"] = errors
    step["http_ms"] = {
        "p50": round(loadgen.percentile(http_ms, 0.5), 2),
        "p99": round(loadgen.percentile(http_ms, 0.99), 2),
    }
    step.update(meter.stop(delivered=delivery.delivered, published=len(records)))
    return step


RUNNERS = {
    "connections": connections,
    "throughput": throughput,
    "fanout": fanout,
    "mixed": mixed,
    "rest": rest.rest,
    "publish_api": publish_api.publish_api,
}


async def run_scenario(bench: Bench, scenario: str, progress) -> dict:
    """Run one scenario against every target of the options, one server at a time."""
    results = {}
    for kind in bench.options.targets():
        if (
            (kind == "floor" and scenario in FLOOR_SKIPS)
            or (kind == "stock" and scenario in STOCK_SKIPS)
            or (kind == bench.options.before_kind and scenario in BEFORE_SKIPS)
            or (kind == SSE and scenario in SSE_SKIPS)
        ):
            continue
        progress(f"{scenario}: {kind} ...")
        started = time.perf_counter()
        async with Target(bench, kind) as target:
            result = await RUNNERS[scenario](target)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results[kind] = result
    return results
