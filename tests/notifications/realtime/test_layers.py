"""The pub/sub layer's process-local channels and pipelined group sends, on a real Redis."""

import asyncio
import threading
import uuid

import pytest
import redis.asyncio as aioredis
from channels_redis.utils import create_pool
from redis.exceptions import ConnectionError as RedisConnectionError

from notifications import compat
from notifications.realtime.layers import RedisPubSubChannelLayer, thread_pool
from tests.support.redis import RedisServer


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


async def subscribe_commands(redis_url) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return stats.get("cmdstat_subscribe", {}).get("calls", 0)


async def test_groups_joined_at_once_are_subscribed_with_one_command(layer, redis_url):
    sinks = {f"user-{n}": [] for n in range(5)}
    channels = {group: layer.new_local_channel(sink.append) for group, sink in sinks.items()}
    await layer.group_add("warm-up", layer.new_local_channel(lambda message: None))
    before = await subscribe_commands(redis_url)
    await asyncio.gather(*(layer.group_add(group, channel) for group, channel in channels.items()))
    assert await subscribe_commands(redis_url) - before == 1
    # Already subscribed: another member of a group sends nothing.
    await layer.group_add("user-0", layer.new_local_channel(lambda message: None))
    assert await subscribe_commands(redis_url) - before == 1
    for group in sinks:
        await layer.group_send(group, {"type": "t", "group": group})
    await wait_for(lambda: all(sinks.values()))
    assert sinks == {group: [{"type": "t", "group": group}] for group in sinks}


async def test_a_group_left_before_its_subscribe_went_out_is_never_subscribed(layer, redis_url):
    first = layer.new_local_channel(lambda message: None)
    await layer.group_add("warm-up", first)
    joining = asyncio.ensure_future(layer.group_add("gone", first))
    await asyncio.sleep(0)  # queued, not sent
    await layer.group_discard("gone", first)
    await joining
    await asyncio.sleep(0.05)
    client = aioredis.Redis.from_url(redis_url)
    try:
        subscribed = await client.pubsub_channels(f"{layer._get_layer().prefix}*")
    finally:
        await client.aclose()
    assert [name.decode() for name in subscribed] == [
        f"{layer._get_layer().prefix}__group__warm-up"
    ]


async def test_a_failed_subscribe_fails_each_join_of_its_batch_and_the_next_join_retries():
    server = RedisServer()  # not started yet: nothing listens on its port
    layer = RedisPubSubChannelLayer(hosts=[{"address": server.url}], prefix="test-fail")
    try:
        channel = layer.new_local_channel(lambda message: None)
        outcomes = await asyncio.gather(
            *(layer.group_add(f"user-{n}", channel) for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes), outcomes
        shard, name = compat.shard_for_group(compat.loop_layer(layer), "user-0")
        assert not compat.subscribed(shard)
        server.start()
        await layer.group_add("user-0", channel)
        assert compat.subscribed(shard) == {name}
    finally:
        await layer.flush()
        server.stop()


async def test_a_thread_send_keeps_each_groups_order(layer):
    received = {"a": [], "b": [], "b2": []}
    members = {name: layer.new_local_channel(sink.append) for name, sink in received.items()}
    await layer.group_add("group-a", members["a"])
    await layer.group_add("group-b", members["b"])
    await layer.group_add("group-b", members["b2"])
    messages = [(f"group-{'a' if n % 3 == 0 else 'b'}", {"type": "t", "n": n}) for n in range(600)]

    await asyncio.to_thread(send_from_a_thread, layer, messages)

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


# --- sends from a thread with no event loop ----------------------------------------------------


def send_from_a_thread(layer, messages) -> None:
    """What the process's sender thread does for a command or a task worker."""
    worker = threading.Thread(target=layer.group_send_many_from_thread, args=(messages,))
    worker.start()
    worker.join(10)


async def test_a_thread_sends_each_group_on_the_shard_its_members_listen_on():
    # Two Redis servers, two shards: a send on the wrong one would reach nobody.
    servers = [RedisServer().start(), RedisServer().start()]
    layer = RedisPubSubChannelLayer(
        hosts=[{"address": server.url} for server in servers],
        prefix=f"test-{uuid.uuid4().hex[:12]}",
    )
    try:
        groups = [f"events.{uuid.uuid4()}" for _ in range(16)]
        shards = {compat.shard_for_group(layer.loop_layer(), group)[0] for group in groups}
        assert len(shards) == 2
        received = {group: [] for group in groups}
        for group in groups:
            await layer.group_add(group, layer.new_local_channel(received[group].append))
        messages = [(groups[n % 16], {"type": "t", "n": n}) for n in range(400)]

        await asyncio.to_thread(send_from_a_thread, layer, messages)

        await wait_for(lambda: sum(map(len, received.values())) == 400)
        for index, group in enumerate(groups):
            assert [m["n"] for m in received[group]] == list(range(index, 400, 16))
    finally:
        await layer.flush()
        for server in servers:
            server.stop()


async def test_a_thread_send_survives_a_connection_redis_dropped(layer, redis_url):
    got = []
    await layer.group_add("g", layer.new_local_channel(got.append))
    await asyncio.to_thread(send_from_a_thread, layer, [("g", {"n": 1})])
    [publisher] = layer._thread_publishers.values()
    publisher.connection.send_command("CLIENT", "ID")
    publishing = publisher.connection.read_response()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        # Redis ends the publishing connection (as a restart would).
        assert await admin.client_kill_filter(_id=publishing) == 1
    finally:
        await admin.aclose()
    await asyncio.to_thread(send_from_a_thread, layer, [("g", {"n": 2})])  # on a new connection
    await wait_for(lambda: len(got) == 2)
    assert got == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    "host",
    [
        {"address": "redis://127.0.0.1:6390/2", "socket_timeout": 15},
        {"sentinels": [("127.0.0.1", 26390)], "master_name": "main", "socket_timeout": 15},
        {"host": "127.0.0.1", "port": 6390, "socket_connect_timeout": 3},
    ],
    ids=["url", "sentinel", "host-port"],
)
def test_a_threads_pool_connects_as_channels_redis_pool_for_the_same_host(host):
    def settings(pool) -> dict:
        # Where and how to connect; each client also keeps helper objects of its own kind.
        return {
            key: value
            for key, value in pool.connection_kwargs.items()
            if isinstance(value, str | int | float | tuple | None) and not key.startswith("orig_")
        }

    blocking, asyncio_pool = thread_pool(host), create_pool(host)
    assert settings(blocking) == settings(asyncio_pool)
    assert {"socket_timeout", "host"} & set(settings(blocking)) or "sentinels" in host
    assert getattr(blocking, "service_name", None) == getattr(asyncio_pool, "service_name", None)
