"""Scale-out: two server processes sharing PostgreSQL-or-SQLite and Redis, a publisher in a
third, clients split across them. Every client gets every event of its user once and in order,
and the clients of a killed process lose nothing after they reconnect to the other."""

import asyncio
import signal

import pytest

from tests.support.demo_server import DemoServer
from tests.support.live import LiveServer
from tests.support.live_clients import ResumingReader

pytestmark = [pytest.mark.live, pytest.mark.redis]

USERS = 10


def publish_round(server: DemoServer, emails: list[str], per_user: int) -> None:
    """Publish `per_user` events to each user from a separate process (the third one)."""
    server.run_django(
        "from notifications.services import event_send_sample\n"
        "from reasonflow.users.models import User\n"
        f"users = list(User.objects.filter(email__in={emails!r}))\n"
        f"for n in range({per_user}):\n"
        "    for user in users:\n"
        "        event_send_sample(user_id=user.id, event_type='email_received')\n"
    )


async def test_two_processes_deliver_every_event_once_in_order_and_survive_a_kill(redis_url):
    with DemoServer(env={"REDIS_URL": redis_url}) as first:
        env = {"REDIS_URL": redis_url, "DATABASE_URL": first.database_url}
        second = LiveServer(env=env).start()
        try:
            emails = [f"user{n}@example.com" for n in range(USERS)]
            tokens = [first.register(email)["access"] for email in emails]
            # Each user has one socket on each process.
            readers = {
                (email, where): ResumingReader(urls, token).start()
                for email, token in zip(emails, tokens, strict=True)
                for where, urls in (
                    ("first", [first.ws_url, second.ws_url]),
                    ("second", [second.ws_url, first.ws_url]),
                )
            }
            for reader in readers.values():
                await asyncio.wait_for(reader.connected.wait(), 20)

            await asyncio.to_thread(publish_round, first, emails, 10)
            await asyncio.gather(*(reader.wait_for(10) for reader in readers.values()))

            first.server.process.send_signal(signal.SIGKILL)  # no close frames, no cleanup
            first.server.process.wait(10)
            await asyncio.to_thread(publish_round, first, emails, 10)  # while they move over
            await asyncio.gather(*(reader.wait_for(20, timeout=60) for reader in readers.values()))
            await asyncio.to_thread(publish_round, first, emails, 5)
            await asyncio.gather(*(reader.wait_for(25) for reader in readers.values()))
            for (email, where), reader in readers.items():
                assert reader.ids == list(range(1, 26)), (email, where, reader.ids)
                await reader.stop()
            moved = [r for (_, where), r in readers.items() if where == "first"]
            assert all(r.close_codes for r in moved)  # they did lose their process
        finally:
            second.stop()
