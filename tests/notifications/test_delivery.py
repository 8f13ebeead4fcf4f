"""Delivery outside a server: one sender thread per process hands sends to the channel layer in
publish order, drains on request, drops the oldest past its backlog, and starts again in a
forked child. Real Redis, the production pub/sub layer."""

import asyncio
import logging
import os
import threading

import pytest
import redis
from channels.layers import get_channel_layer

from notifications import delivery
from notifications.delivery import deliver, flush_deliveries
from tests.conftest import pubsub_layer_config
from tests.support.redis import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def layer(settings, redis_url):
    settings.CHANNEL_LAYERS = pubsub_layer_config(redis_url)
    return get_channel_layer()


async def listen(layer, group: str) -> list[dict]:
    received: list[dict] = []
    await layer.group_add(group, layer.new_local_channel(received.append))
    return received


async def wait_for(predicate, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def from_a_plain_thread(work) -> None:
    """Run `work` where a command or a task worker publishes: a thread with no event loop."""
    outcome: list[BaseException] = []

    def run():
        try:
            work()
        except BaseException as failure:
            outcome.append(failure)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if outcome:
        raise outcome[0]


async def test_sends_from_threads_without_a_loop_arrive_in_publish_order(layer):
    received = await listen(layer, "order")

    def publish():
        for n in range(1_000):
            deliver("order", {"type": "t", "n": n})
        assert flush_deliveries(timeout=10)

    await asyncio.to_thread(from_a_plain_thread, publish)
    await wait_for(lambda: len(received) == 1_000)
    assert [m["n"] for m in received] == list(range(1_000))


async def test_a_backlog_past_its_limit_loses_its_oldest_live_sends_with_a_warning(
    settings, monkeypatch, caplog
):
    # Redis holds every PUBLISH for a second (a stall): the sender waits, the queue grows.
    redis_server = RedisServer().start()
    try:
        settings.CHANNEL_LAYERS = pubsub_layer_config(redis_server.url)
        layer = get_channel_layer()
        received = await listen(layer, "slow")
        monkeypatch.setattr(delivery, "MAX_QUEUED_SENDS", 100)
        redis.Redis.from_url(redis_server.url).execute_command("CLIENT", "PAUSE", 1000, "WRITE")

        def publish():
            for n in range(1_000):
                deliver("slow", {"type": "t", "n": n})
            assert flush_deliveries(timeout=20)

        with caplog.at_level(logging.WARNING, logger="notifications.delivery"):
            await asyncio.to_thread(from_a_plain_thread, publish)
            await asyncio.sleep(0.5)
        dropped = [r for r in caplog.records if "backlog full" in r.getMessage()]
        numbers = [m["n"] for m in received]
        assert numbers == sorted(numbers)  # what arrives is in order
        assert numbers[-100:] == list(range(900, 1_000))  # the newest are kept
        assert len(dropped) == 1_000 - len(numbers) > 0  # each loss is logged
    finally:
        redis_server.stop()


async def test_a_forked_child_sends_from_a_thread_of_its_own(layer):
    received = await listen(layer, "fork")
    await asyncio.to_thread(
        from_a_plain_thread, lambda: (deliver("fork", {"n": 0}), flush_deliveries(10))
    )
    await wait_for(lambda: len(received) == 1)

    def fork_and_publish() -> int:
        pid = os.fork()
        if pid == 0:  # the child: its parent's sender thread did not come along
            try:
                deliver("fork", {"n": 1})
                os._exit(0 if flush_deliveries(timeout=10) else 1)
            finally:
                os._exit(2)
        return os.waitpid(pid, 0)[1]

    assert os.waitstatus_to_exitcode(await asyncio.to_thread(fork_and_publish)) == 0
    await wait_for(lambda: len(received) == 2)
    assert received == [{"n": 0}, {"n": 1}]


async def test_a_layer_that_looks_attributes_up_on_the_running_loop_is_sent_to_from_a_thread(
    settings, redis_url
):
    # channels-redis's own pub/sub layer (the stock consumer's) resolves a missing attribute
    # through the running loop's layer; a thread outside the server has none.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": pubsub_layer_config(redis_url)["default"]["CONFIG"],
        }
    }
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("stock", channel)

    def publish():
        deliver("stock", {"type": "t", "n": 1})
        assert flush_deliveries(timeout=10)

    await asyncio.to_thread(from_a_plain_thread, publish)
    async with asyncio.timeout(10):
        assert await layer.receive(channel) == {"type": "t", "n": 1}
    await layer.flush()
