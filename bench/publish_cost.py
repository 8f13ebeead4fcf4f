"""What durability costs: one sync publish_event in a request, and a 1,000-event replay.

Run: python -m bench.publish_cost  (uses DATABASE_URL / REDIS_URL when set; PostgreSQL + Redis
give the production figures). Prints a table; numbers are medians of many runs in one process.
"""

import asyncio
import itertools
import os
import statistics
import sys
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")

import django

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

from notifications.delivery import aflush_deliveries, flush_deliveries  # noqa: E402
from notifications.events import sample_data  # noqa: E402
from notifications.models import Event  # noqa: E402
from notifications.publish import publish_event  # noqa: E402
from reasonflow.asgi import application  # noqa: E402
from reasonflow.users.models import User  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "1000"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


DATA = sample_data("draft_ready")
# Rows outside the real event ids, deleted afterwards.
_scratch_ids = itertools.count(-1, -1)


def transaction_of(user: User, *, publishing: bool) -> None:
    """One 'request': its own write (a row of the same table and size as an event), and with
    `publishing` one publish_event, in one transaction."""
    with transaction.atomic():
        Event.objects.create(
            user=user,
            event_id=next(_scratch_ids),
            type="draft_ready",
            data=DATA,
            created_at=timezone.now(),
        )
        if publishing:
            publish_event(user_id=user.id, event_type="draft_ready", data=DATA)


def timed_requests(user: User) -> dict[str, list[float]]:
    """Each 'request' is one transaction; runs in a sync_to_async thread like a Django view."""
    baseline, publish = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        transaction_of(user, publishing=False)
        baseline.append(time.perf_counter() - started)
        started = time.perf_counter()
        transaction_of(user, publishing=True)
        publish.append(time.perf_counter() - started)
    Event.objects.filter(user=user, event_id__lt=0).delete()
    return {"write only": baseline, "write + publish_event": publish}


def cpu_per_transaction(user: User) -> dict[str, float]:
    """The producer process's CPU (every thread: publish_event hands delivery to a thread of
    its own) per transaction, RUNS transactions without publish_event, then RUNS with it."""
    cpu = {}
    for name, publishing in (("write only", False), ("write + publish_event", True)):
        started = time.process_time()
        for _ in range(RUNS):
            transaction_of(user, publishing=publishing)
        if publishing:
            flush_deliveries()  # the delivery thread's work counts too
        cpu[name] = (time.process_time() - started) / RUNS
    Event.objects.filter(user=user, event_id__lt=0).delete()
    return cpu


async def replay(user: User, count: int) -> float:
    token = str(AccessToken.for_user(user))
    comm = WebsocketCommunicator(application, "/api/v1/notifications/ws")
    await comm.connect()
    started = time.perf_counter()
    await comm.send_json_to({"token": token, "last_event_id": 0})
    await comm.receive_json_from(timeout=10)
    for _ in range(count):
        await comm.receive_from(timeout=10)
    elapsed = time.perf_counter() - started
    await comm.disconnect()
    return elapsed


async def main() -> None:
    await sync_to_async(call_command)("migrate", verbosity=0)
    user = await sync_to_async(User.objects.create_user)(
        email=f"bench-{uuid.uuid4().hex[:8]}@example.com", password=None
    )
    try:
        timings = await sync_to_async(timed_requests)(user)
        await aflush_deliveries()
        cpu = await sync_to_async(cpu_per_transaction)(user)
        published = await sync_to_async(Event.objects.filter(user=user).count)()
        replays = [await replay(user, published) for _ in range(5)]
    finally:
        await sync_to_async(user.delete)()

    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    print(f"database: {connection.vendor}; channel layer: {layer}; runs: {RUNS}")
    print(f"{'transaction':<24}{'median µs':>12}{'p99 µs':>12}")
    for name, values in timings.items():
        median, p99 = statistics.median(values) * 1e6, percentile(values, 0.99) * 1e6
        print(f"{name:<24}{median:>12.0f}{p99:>12.0f}")
    added = statistics.median(timings["write + publish_event"]) - statistics.median(
        timings["write only"]
    )
    print(f"publish_event adds {added * 1e6:.0f} µs median beyond the request's own write")
    cpu_added = cpu["write + publish_event"] - cpu["write only"]
    print(
        f"producer CPU per transaction: {cpu['write only'] * 1e6:.0f} µs write only, "
        f"{cpu['write + publish_event'] * 1e6:.0f} µs with publish_event: "
        f"publish_event adds {cpu_added * 1e6:.0f} µs of CPU"
    )
    replay_ms = statistics.median(replays) * 1e3
    print(f"replay of {published} events over one socket: median {replay_ms:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
