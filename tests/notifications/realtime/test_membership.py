"""notifications.realtime.membership: a socket's reader on the core Redis layer ends with the
socket, however its cancellation lands (tests/notifications/realtime/test_consumer.py covers
joining, delivery and leaving on every layer)."""

import asyncio
import random

import pytest

from tests.conftest import access_token_for
from tests.support.ws import connect, publish, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def readers() -> list[asyncio.Task]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().__qualname__ == "LayerMembership._read"
    ]


async def test_no_reader_outlives_its_socket_when_sockets_close_while_events_flow(
    redis_layer, user
):
    # Each reader sends a command to Redis for every message (channels-redis's core layer), and
    # a cancellation that lands as one of those writes completes is swallowed on Python 3.11
    # (waiters.cancel_until_done). Sockets closing at random moments while events arrive hit
    # that window now and then; every reader must still end, or it would wait on Redis for good.
    chance = random.Random(15)
    token = access_token_for(user)
    for _ in range(15):
        sockets = [(await connect(token))[0] for _ in range(4)]
        for _ in range(3):
            await publish(user)

        async def close(comm):
            await asyncio.sleep(chance.random() * 0.01)
            await comm.disconnect()

        await asyncio.gather(*(close(comm) for comm in sockets))

        async def no_reader_left() -> bool:
            return not readers()

        await wait_until(no_reader_left, timeout=3)
