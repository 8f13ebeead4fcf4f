"""The pub/sub layer's process-local channels and pipelined group sends, on a real Redis."""

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from notifications.realtime.layers import RedisPubSubChannelLayer


@pytest.fixture
async def layer(redis_url):
    layer = RedisPubSubChannelLayer(
        hosts=[{"address": redis_url}], prefix=f"test-{uuid.uuid4().hex[:12]}"
    )
    yield layer
    await layer.flush()


async def wait_for(predicate, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_only_groups_are_subscribed_in_redis_and_each_member_gets_each_message(
    layer, redis_url
):
    first, second = [], []
    channels = [layer.new_local_channel(first.append), layer.new_local_channel(second.append)]
    for channel in channels:
        await layer.group_add("user-1", channel)
    client = aioredis.Redis.from_url(redis_url)
    try:
        subscribed = await client.pubsub_channels(f"{layer._get_layer().prefix}*")
    finally:
        await client.aclose()
    # One subscription for the group, none for the sockets' own channels.
    assert [name.decode() for name in subscribed] == [f"{layer._get_layer().prefix}__group__user-1"]

    await layer.group_send("user-1", {"type": "notification.event", "n": 1})
    await wait_for(lambda: first and second)
    assert first == second == [{"type": "notification.event", "n": 1}]


async def test_group_send_many_keeps_each_groups_order(layer):
    received = {"a": [], "b": [], "b2": []}
    members = {name: layer.new_local_channel(sink.append) for name, sink in received.items()}
    await layer.group_add("group-a", members["a"])
    await layer.group_add("group-b", members["b"])
    await layer.group_add("group-b", members["b2"])
    messages = [(f"group-{'a' if n % 3 == 0 else 'b'}", {"type": "t", "n": n}) for n in range(600)]

    await layer.group_send_many(messages)

    await wait_for(lambda: len(received["a"]) == 200 and len(received["b2"]) == 400)
    await asyncio.sleep(0.1)  # nothing more arrives
    assert [m["n"] for m in received["a"]] == list(range(0, 600, 3))
    expected_b = [n for n in range(600) if n % 3]
    assert [m["n"] for m in received["b"]] == expected_b
    assert [m["n"] for m in received["b2"]] == expected_b


async def test_a_discarded_channel_gets_nothing_and_a_direct_send_stays_local(layer):
    kept, dropped = [], []
    keep = layer.new_local_channel(kept.append)
    drop = layer.new_local_channel(dropped.append)
    for channel in (keep, drop):
        await layer.group_add("user-2", channel)
    layer.discard_local_channel(drop)

    await layer.group_send("user-2", {"type": "t", "n": 1})
    await layer.send(keep, {"type": "t", "n": 2})

    await wait_for(lambda: len(kept) == 2)
    # The direct send is handed over at once; the group's message comes back through Redis.
    assert sorted(m["n"] for m in kept) == [1, 2]
    assert dropped == []


async def test_channels_from_new_channel_still_work_the_channels_redis_way(layer):
    channel = await layer.new_channel()
    await layer.group_add("user-3", channel)
    await layer.group_send("user-3", {"type": "t", "n": 1})
    await layer.send(channel, {"type": "t", "n": 2})
    async with asyncio.timeout(5):
        assert [(await layer.receive(channel))["n"] for _ in range(2)] == [1, 2]
