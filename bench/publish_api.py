"""The `publish_api` scenario: what an event costs through the HTTP publish API (PROTOCOL §6)
beside in-process `publish_event`, in one run, at batches of 1 and of 100.

HTTP: `http_concurrency` keep-alive clients send `publish_events` events back to back, one
request per batch, to `manage.py serve` (pinned to one core); events/s served, and the server
process's CPU per event (/proc, every thread). In-process: the target's publisher processes
(the task-worker shape: sync Django, `publish_event` in a transaction per batch, pinned next
to the load generator) publish as many events as fast as they can; events/s, and their CPU per
event. Either way the events go to users drawn over the same pool, through the same store and
channel layer; PostgreSQL's and Redis's CPU are in neither figure.
"""

import asyncio
import json
import random
import time

from bench.rest import HttpClient

BATCHES = (1, 100)
PATH = "/api/v1/notifications/publish"
EVENT_TYPE = "draft_ready"
USERS = 100


def prepare(bench) -> dict:
    """A service key and `USERS` users. Sync ORM: call outside the event loop."""
    from notifications.events import sample_data
    from notifications.services import service_key_create

    _, secret = service_key_create(name=f"bench {time.time():.0f}")
    return {
        "key": secret,
        "users": [user_id for user_id, _ in bench.users(USERS)],
        "data": sample_data(EVENT_TYPE),
    }


async def _over_http(target, fixture: dict, batch: int, events: int) -> dict:
    rng = random.Random(batch)
    requests = max(1, events // batch)
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(requests):
        body = [
            {"user": rng.choice(fixture["users"]), "type": EVENT_TYPE, "data": fixture["data"]}
            for _ in range(batch)
        ]
        queue.put_nowait(body[0] if batch == 1 else {"events": body})
    published, errors = 0, 0

    async def worker(client: HttpClient) -> None:
        nonlocal published, errors
        while not queue.empty():
            body = queue.get_nowait()
            try:
                status, raw = await client.request("POST", PATH, fixture["key"], body)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                client.close()
                errors += 1
                continue
            if status == 201:
                published += len(json.loads(raw)["events"])
            else:
                errors += 1

    clients = [HttpClient(target.server.port) for _ in range(target.bench.options.http_concurrency)]
    try:
        before = target.server.sample()
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        elapsed = time.perf_counter() - began
        after = target.server.sample()
    finally:
        for client in clients:
            client.close()
    return {
        "batch": batch,
        "requests": requests,
        "events": published,
        "errors": errors,
        "events_per_s": round(published / elapsed, 1),
        "cpu_us_per_event": round((after.cpu - before.cpu) / max(1, published) * 1e6, 1),
    }


async def _in_process(target, fixture: dict, batch: int, events: int) -> dict:
    publishers = target.publishers
    count = len(publishers)
    shares = [events // count + (index < events % count) for index in range(count)]
    replies = await asyncio.gather(
        *(
            asyncio.to_thread(publisher.run, fixture["users"], 1e9, share, batch)
            for publisher, share in zip(publishers, shares, strict=True)
            if share
        )
    )
    published = sum(reply["published"] for reply in replies)
    elapsed = max(reply["elapsed"] for reply in replies)
    cpu = sum(reply["cpu"] for reply in replies)
    return {
        "batch": batch,
        "processes": len(publishers),
        "events": published,
        "events_per_s": round(published / elapsed, 1),
        "cpu_us_per_event": round(cpu / max(1, published) * 1e6, 1),
    }


async def publish_api(target) -> dict:
    """Both paths at each batch size (see the module docstring)."""
    events = target.bench.options.publish_events
    fixture = await asyncio.to_thread(prepare, target.bench)
    await _over_http(target, fixture, 1, 50)  # warm-up: imports, connections, caches
    result: dict = {"http": [], "publish_event": []}
    for batch in BATCHES:
        result["http"].append(await _over_http(target, fixture, batch, events))
        result["publish_event"].append(await _in_process(target, fixture, batch, events))
    return result


def render(results: dict) -> str:
    header = ["target", "path", "batch", "events", "events/s", "CPU µs/event", "errors"]
    rows = []
    for kind, result in results.items():
        for path, steps in (
            ("HTTP API", result["http"]),
            ("publish_event", result["publish_event"]),
        ):
            for step in steps:
                rows.append(
                    [
                        kind,
                        path,
                        str(step["batch"]),
                        str(step["events"]),
                        f"{step['events_per_s']:.0f}",
                        f"{step['cpu_us_per_event']:.0f}",
                        str(step.get("errors", 0)),
                    ]
                )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    note = (
        "HTTP API: server process CPU (one core); publish_event: the publisher processes' CPU "
        "(sync Django, as a task worker). PostgreSQL and Redis CPU in neither."
    )
    return "\n".join([*lines, note])
