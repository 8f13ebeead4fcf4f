"""The `rest` scenario: what one REST request costs the production server (`manage.py serve`).

Three endpoints, each in two phases. Saturation: `concurrency` keep-alive clients send
`rest_requests` requests back to back; the server process's CPU over them (/proc, every
thread) gives CPU per request, and the rate they were served at is what one core does (the
server is pinned to one). Paced: requests due at `rest_rate` per second for `duration` seconds,
each timed from when it was due (not when a client got to it), so a server that falls behind
shows in p99. PostgreSQL's own count of sessions opened (pg_stat_database.sessions) gives new
database sessions per request.
"""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import psycopg

from bench import loadgen

ENDPOINTS = ("emails_list", "notification_test", "draft_approve")
PAGE = 50  # the emails list reads one page of this many
WARM_UP = 50  # requests per endpoint before anything is counted
TARGET_CPU_MS = 3.0
TARGET_RATE = 250.0
TARGET_P99_MS = 20.0


class HttpClient:
    """One keep-alive HTTP/1.1 connection to our own server (JSON in, status and body out);
    `mixed` uses it too."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, token: str, body: dict | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def prepare(bench, drafts: int) -> dict:
    """A reader with 2 pages of emails, a staff user and a recipient, and `drafts` pending
    drafts (each approval uses one up). Sync ORM: call outside the event loop."""
    from emails.models import Draft, Email

    (reader_id, reader_token), (recipient_id, _) = bench.users(2)
    _, staff_token = bench.special("staff", is_staff=True)
    now = datetime.now(UTC)
    emails = [
        Email(
            owner_id=reader_id,
            source_message_id=f"<{uuid.uuid4()}@bench.invalid>",
            subject=f"Question {index}",
            sender="Ada Customer <ada@bench.invalid>",
            recipient="support@bench.invalid",
            body="Could you tell me more about the plan? " * 8,
            received_at=now,
            classification="inquiry",
            confidence=0.8,
            classification_reasons=["asks a question"],
            status="drafted",
        )
        for index in range(2 * PAGE + drafts)
    ]
    Email.objects.bulk_create(emails, batch_size=1000)
    created = Draft.objects.bulk_create(
        [Draft(email=email, subject=f"Re: {email.subject}", body="Thanks!") for email in emails],
        batch_size=1000,
    )
    return {
        "reader": reader_token,
        "staff": staff_token,
        "recipient": recipient_id,
        "drafts": [str(draft.id) for draft in created[2 * PAGE :]],
    }


def _requests(endpoint: str, fixture: dict):
    """An endless supply of (method, path, token, body) for one endpoint."""
    if endpoint == "emails_list":
        while True:
            yield "GET", f"/api/v1/emails/?page_size={PAGE}", fixture["reader"], None
    elif endpoint == "notification_test":
        body = {"user": fixture["recipient"], "type": "draft_ready"}
        while True:
            yield "POST", "/api/v1/notifications/test", fixture["staff"], body
    else:
        while fixture["drafts"]:
            draft = fixture["drafts"].pop()
            yield "POST", f"/api/v1/drafts/{draft}/approve", fixture["reader"], None


EXPECTED = {"emails_list": 200, "notification_test": 201, "draft_approve": 200}


async def _send(clients, requests, count: int, *, rate: float | None, expected: int) -> dict:
    """Send `count` requests through `clients`: back to back, or due at `rate`/s."""
    queue: asyncio.Queue = asyncio.Queue()
    latencies, errors = [], 0

    async def worker(client: HttpClient) -> None:
        nonlocal errors
        while (item := await queue.get()) is not None:
            due, request = item
            try:
                status, _ = await client.request(*request)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                client.close()
                errors += 1
                continue
            latencies.append((time.perf_counter() - due) * 1000)
            errors += status != expected

    workers = [asyncio.create_task(worker(client)) for client in clients]
    began = time.perf_counter()
    for index in range(count):
        due = began if rate is None else began + index / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, next(requests)))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - began
    return {
        "requests": count,
        "errors": errors,
        "served_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(loadgen.percentile(latencies, 0.5), 2),
        "p99_ms": round(loadgen.percentile(latencies, 0.99), 2),
    }


def _sessions(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]


async def _measure(target, requests, *, count: int, rate: float | None, expected: int) -> dict:
    options = target.bench.options
    clients = [HttpClient(target.server.port) for _ in range(options.http_concurrency)]
    try:
        await _send(clients, requests, WARM_UP, rate=None, expected=expected)
        await asyncio.sleep(0.5)  # let the statistics collector see the warm-up's sessions
        sessions = await asyncio.to_thread(_sessions, target.bench.db.url)
        before = target.server.sample()
        step = await _send(clients, requests, count, rate=rate, expected=expected)
        after = target.server.sample()
    finally:
        for client in clients:
            client.close()
    await asyncio.sleep(0.5)
    opened = await asyncio.to_thread(_sessions, target.bench.db.url) - sessions
    step["server_cpu_ms_per_request"] = round((after.cpu - before.cpu) / count * 1000, 2)
    step["db_sessions_per_request"] = round(opened / count, 2)
    return step


async def rest(target) -> dict:
    """Each endpoint at saturation, then paced at `rest_rate`/s (see the module docstring)."""
    options = target.bench.options
    paced = max(1, int(options.rest_rate * options.duration))
    drafts = 2 * WARM_UP + options.rest_requests + paced
    fixture = await asyncio.to_thread(prepare, target.bench, drafts)
    result = {}
    for endpoint in ENDPOINTS:
        requests = _requests(endpoint, fixture)
        expected = EXPECTED[endpoint]
        saturated = await _measure(
            target, requests, count=options.rest_requests, rate=None, expected=expected
        )
        at_rate = await _measure(
            target, requests, count=paced, rate=options.rest_rate, expected=expected
        )
        result[endpoint] = {"saturated": saturated, "paced": {"rate": options.rest_rate, **at_rate}}
    return result


def goals_met(saturated: dict, paced: dict) -> tuple[bool, bool, bool]:
    """Whether one endpoint's figures meet the CPU, the rate and the p99 goal."""
    return (
        saturated["server_cpu_ms_per_request"] <= TARGET_CPU_MS,
        saturated["served_per_s"] >= TARGET_RATE,
        paced["p99_ms"] <= TARGET_P99_MS,
    )


def render(results: dict) -> str:
    """One row per target and endpoint, then the goals met by each target."""
    header = ["target", "endpoint", "cpu ms/req", "req/s (1 core)", "db sessions/req"]
    header += ["paced req/s", "p50 ms", "p99 ms", "errors"]
    rows, verdicts = [], []
    for kind, result in results.items():
        for endpoint, r in result.items():
            if endpoint == "seconds":
                continue
            saturated, paced = r["saturated"], r["paced"]
            rows.append(
                [
                    kind,
                    endpoint,
                    f"{saturated['server_cpu_ms_per_request']:.2f}",
                    f"{saturated['served_per_s']:.0f}",
                    f"{saturated['db_sessions_per_request']:.2f}",
                    f"{paced['served_per_s']:.0f}/{paced['rate']:g}",
                    f"{paced['p50_ms']:.1f}",
                    f"{paced['p99_ms']:.1f}",
                    str(saturated["errors"] + paced["errors"]),
                ]
            )
            met = goals_met(saturated, paced)
            verdicts.append(
                f"{kind} {endpoint}: cpu ≤ {TARGET_CPU_MS:g} ms {'met' if met[0] else 'NOT met'}, "
                f"≥ {TARGET_RATE:g}/s per core {'met' if met[1] else 'NOT met'}, "
                f"p99 ≤ {TARGET_P99_MS:g} ms at {paced['rate']:g}/s "
                f"{'met' if met[2] else 'NOT met'}"
            )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join([*lines, *verdicts])
