"""The publisher process: calls the project's real `publish_event` at a paced rate (or, for the
floor, PUBLISHes the same envelope to its Redis channel) and records when each call started.

It runs as its own process (`python -m bench.publisher --mode publish|floor`), like a task
worker: sync Django code outside any ASGI server, delivering through publish.py's background
loop. Commands arrive on stdin as JSON lines, answers leave on stdout:

  {"op": "run", "users": [uuid, ...], "rate": R, "count": N, "batch": B, "seed": S, "out": path}
  -> {"published": N, "elapsed": s, "cpu": s}; `out` holds [[user, id, publish wall time], ...]

The (user, id) -> publish time side table is how the load generator measures latency without
anything added to the wire format.
"""

import argparse
import contextlib
import json
import os
import queue
import random
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")

import django

django.setup()

import redis  # noqa: E402
from django.db import transaction  # noqa: E402

from bench.floor import FLOOR_CHANNEL  # noqa: E402
from bench.infra import LOAD_CPU, collect_garbage_now_only, pin  # noqa: E402
from notifications.delivery import SEND_BATCH, flush_deliveries  # noqa: E402
from notifications.events import format_timestamp, sample_data  # noqa: E402
from notifications.publish import publish_event  # noqa: E402
from notifications.realtime.open_files import raise_open_file_limit  # noqa: E402

EVENT_TYPE = "draft_ready"


class PipelinedPublishes:
    """The floor's PUBLISHes, sent as ours are (notifications/delivery.py): from a thread of
    their own, all that are queued (up to SEND_BATCH) in one pipelined round trip, without
    blocking the caller."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._send, daemon=True).start()

    def publish(self, message: str) -> None:
        self.queue.put(message)

    def flush(self) -> None:
        self.queue.join()

    def _send(self) -> None:
        while True:
            messages = [self.queue.get()]
            while len(messages) < SEND_BATCH:
                try:
                    messages.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            pipeline = self.client.pipeline(transaction=False)
            for message in messages:
                pipeline.publish(FLOOR_CHANNEL, message)
            pipeline.execute()
            for _ in messages:
                self.queue.task_done()


class Publisher:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.data = sample_data(EVENT_TYPE)
        self.floor_ids: dict[str, int] = defaultdict(int)
        self.floor = PipelinedPublishes(os.environ["REDIS_URL"]) if mode == "floor" else None

    def publish_one(self, user: str) -> Callable[[], int]:
        """Publish one event to `user`; returns what reads its id once its transaction
        committed (publish_event numbers a transaction's events at commit)."""
        if self.mode == "publish":
            event = publish_event(user_id=user, event_type=EVENT_TYPE, data=self.data)
            return lambda: event.event_id
        self.floor_ids[user] += 1
        event_id = self.floor_ids[user]
        envelope = json.dumps(
            {
                "id": event_id,
                "type": EVENT_TYPE,
                "user_id": user,
                "data": self.data,
                "timestamp": format_timestamp(datetime.now(UTC)),
            },
            separators=(",", ":"),
        )
        self.floor.publish(f"{user}\n{envelope}")
        return lambda: event_id

    def run(
        self, *, users: list[str], rate: float, count: int, batch: int, seed: int
    ) -> tuple[list, float]:
        """Publish `count` events to users drawn at random from `users` (other publishers may
        draw the same ones, as producers do in production), `batch` per transaction, paced to
        `rate` events/s (as fast as possible when behind). Returns the side table and the
        elapsed time until every event was handed to the channel layer."""
        records = []
        draw = random.Random(seed).choice
        started = time.perf_counter()
        done = 0
        while done < count:
            due = started + done / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            size = min(batch, count - done)
            scope = transaction.atomic() if self.mode == "publish" else contextlib.nullcontext()
            published = []
            with scope:
                for _ in range(size):
                    user = draw(users)
                    at = time.time()
                    published.append((user, self.publish_one(user), at))
            records.extend((user, event_id(), at) for user, event_id, at in published)
            done += size
        if self.mode == "publish":
            flush_deliveries(30)
        else:
            self.floor.flush()
        return records, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["publish", "floor"], default="publish")
    parser.add_argument("--cpu", type=int, default=LOAD_CPU)
    args = parser.parse_args()
    pin(args.cpu if args.cpu >= 0 else None)
    raise_open_file_limit()
    publisher = Publisher(args.mode)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] != "run":
            continue
        collect_garbage_now_only()
        cpu = time.process_time()
        records, elapsed = publisher.run(
            users=command["users"],
            rate=float(command["rate"]),
            count=int(command["count"]),
            batch=int(command.get("batch", 1)),
            seed=int(command.get("seed", 0)),
        )
        with open(command["out"], "w") as out:
            json.dump(records, out)
        reply = {"published": len(records), "elapsed": elapsed, "cpu": time.process_time() - cpu}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
