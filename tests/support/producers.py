"""A producer process for the deadlock load test: transactions that each publish `--per-txn`
events to random users of a shared pool, in random order, for `--seconds`.

Run as `python -m tests.support.producers --users ID,ID,... --seconds 60` with DATABASE_URL set
to the test database; prints one JSON object: committed transactions, the ids each committed
transaction got per user (in commit order), and every error by kind (deadlocks counted apart).
"""

import argparse
import json
import os
import random
import sys
import time
import traceback

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", required=True, help="comma-separated user UUIDs")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--per-txn", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import OperationalError, transaction

    from notifications.delivery import flush_deliveries
    from notifications.events import EventType, sample_data
    from notifications.publish import publish_event

    users = args.users.split(",")
    rng = random.Random(args.seed)
    data = sample_data(EventType.EMAIL_RECEIVED)
    committed: list[list[tuple[str, int]]] = []
    errors: dict[str, int] = {}
    deadlocks = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        # Random users with repeats, in random order: the order producers lock in today.
        targets = [rng.choice(users) for _ in range(args.per_txn)]
        try:
            with transaction.atomic():
                events = [
                    publish_event(user_id=user, event_type=EventType.EMAIL_RECEIVED, data=data)
                    for user in targets
                ]
        except OperationalError as exc:
            if "deadlock" in str(exc):
                deadlocks += 1
            else:
                errors[repr(exc)[:200]] = errors.get(repr(exc)[:200], 0) + 1
            continue
        except Exception:
            key = traceback.format_exc(limit=3)[-400:]
            errors[key] = errors.get(key, 0) + 1
            continue
        committed.append([(str(event.user_id), event.event_id) for event in events])
    flush_deliveries()
    json.dump({"committed": committed, "deadlocks": deadlocks, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
