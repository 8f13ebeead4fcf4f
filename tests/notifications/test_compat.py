"""notifications/compat.py: every assumption it makes about a dependency, checked against the
installed versions; and the consumer's task-free write (a free lock taken at once, a send
coroutine started by hand and finished by a task)."""

import asyncio
import inspect

import pytest

from notifications import compat
from notifications.compat import Resumed as _Resumed
from notifications.compat import acquired_at_once as _acquired_at_once


async def test_a_free_lock_is_taken_at_once():
    lock = asyncio.Lock()
    assert _acquired_at_once(lock)
    assert lock.locked()
    assert not _acquired_at_once(lock)
    lock.release()
    assert not lock.locked()


async def test_a_lock_someone_waits_for_is_left_to_them():
    lock = asyncio.Lock()
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)  # the waiter is queued
    lock.release()  # free, but promised to the waiter
    assert not _acquired_at_once(lock)
    assert await waiter is True
    assert lock.locked()
    lock.release()


async def test_a_coroutine_that_finishes_at_once_needs_no_task():
    written = []

    async def send(frame):
        written.append(frame)

    coroutine = send("a")
    with pytest.raises(StopIteration):
        coroutine.send(None)
    assert written == ["a"]


def started_by_hand(coroutine):
    """Run the first step of `coroutine` as _forward_at_once does; return what it waits on."""
    blocked_on = coroutine.send(None)
    assert isinstance(blocked_on, asyncio.Future)
    return blocked_on


async def resumed(coroutine, blocked_on):
    return await _Resumed(coroutine, blocked_on)


async def test_a_task_finishes_a_send_that_had_to_wait():
    writable = asyncio.Event()
    written = []

    async def send(frame):
        await writable.wait()
        written.append(frame)
        return "done"

    coroutine = send("a")
    blocked_on = started_by_hand(coroutine)
    task = asyncio.ensure_future(resumed(coroutine, blocked_on))
    await asyncio.sleep(0.01)
    assert written == [] and not task.done()
    writable.set()
    assert await asyncio.wait_for(task, 1) == "done"
    assert written == ["a"]


async def test_a_waiting_send_is_cancelled_by_the_send_timeout():
    writable = asyncio.Event()
    cleaned_up = []

    async def send(frame):
        try:
            await writable.wait()
        finally:
            cleaned_up.append(frame)

    coroutine = send("a")
    blocked_on = started_by_hand(coroutine)

    async def with_timeout():
        async with asyncio.timeout(0.05):
            await _Resumed(coroutine, blocked_on)

    with pytest.raises(TimeoutError):
        await with_timeout()
    assert cleaned_up == ["a"]
    assert blocked_on.cancelled()


# --- every assumption of notifications/compat.py, against the installed versions -------------


async def test_sync_code_run_for_a_server_loop_finds_that_loop():
    from asgiref.sync import sync_to_async

    loop = asyncio.get_running_loop()
    assert await sync_to_async(compat.server_event_loop)() is loop
    assert compat.server_event_loop() is None  # this thread is not sync_to_async's


def test_sync_code_outside_any_server_finds_no_loop():
    assert compat.server_event_loop() is None


def test_django_pings_a_reused_connection_only_until_the_health_check_is_marked_done():
    # skip_health_check() sets the flag close_if_health_check_failed() reads.
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    source = inspect.getsource(BaseDatabaseWrapper.close_if_health_check_failed)
    assert "self.health_check_done" in source
    compat.skip_health_check(connection)
    assert connection.health_check_done is True


def test_the_pubsub_layer_has_the_private_parts_compat_relies_on():
    from channels_redis import pubsub, utils

    assert callable(utils._wrap_close)
    assert callable(pubsub.RedisPubSubChannelLayer._get_layer)
    layer = pubsub.RedisPubSubChannelLayer(hosts=[{"address": "redis://127.0.0.1:1"}])
    assert isinstance(layer._layers, dict) and layer._args == () and "hosts" in layer._kwargs
    loop_layer = pubsub.RedisPubSubLoopLayer(hosts=[{"address": "redis://127.0.0.1:1"}])
    assert all(isinstance(s, pubsub.RedisSingleShardConnection) for s in loop_layer._shards)
    assert callable(loop_layer._get_group_channel_name) and callable(loop_layer._get_shard)
    shard = loop_layer._shards[0]
    assert isinstance(shard._lock, asyncio.Lock) and hasattr(shard, "_redis")
    assert callable(shard._ensure_redis)
    source = inspect.getsource(pubsub.RedisSingleShardConnection)
    assert "self._receive_message(" in source  # the reader hands every message to it


async def test_our_pubsub_layer_makes_its_own_loop_layers_and_shards(redis_url):
    from notifications.realtime import layers

    layer = layers.RedisPubSubChannelLayer(hosts=[{"address": redis_url}])
    try:
        loop_layer = compat.loop_layer(layer)
        assert isinstance(loop_layer, layers._LocalChannelsLoopLayer)
        assert compat.loop_layer(layer) is loop_layer  # one per loop
        shard, name = compat.shard_for_group(loop_layer, "g")
        assert isinstance(shard, layers._LocalDeliveryShard)
        assert name.endswith("__group__g")
        got = []
        channel = layer.new_local_channel(got.append)
        await layer.group_add("g", channel)
        await layer.group_send_many([("g", {"type": "x", "n": 1})])  # compat.publish_many
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
        assert got == [{"type": "x", "n": 1}]  # through the installed message handler
    finally:
        await layer.flush()


async def test_aborting_a_client_transport_drops_the_connection_at_once():
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def handler(ws):
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            compat.abort_transport(ws)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(2):
                    await ws.recv()


async def test_a_coroutine_that_needs_no_wait_finishes_on_its_first_step():
    async def done():
        return 1

    assert compat.run_until_blocked(done()) is None


async def test_a_coroutine_that_waits_is_finished_by_the_awaitable_returned():
    gate = asyncio.Event()

    async def waits():
        await gate.wait()
        return "finished"

    rest = compat.run_until_blocked(waits())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    gate.set()
    assert await task == "finished"


@pytest.mark.django_db
async def test_django_serves_a_request_through_the_sync_middleware_chain_in_one_hop():
    # Were ASGIHandler to await its chain anywhere but through get_response_async, the sync
    # chain would fail here instead of in production.
    from asgiref.sync import iscoroutinefunction
    from channels.testing import HttpCommunicator
    from django.core.handlers.asgi import ASGIHandler

    handler = ASGIHandler()
    compat.run_middleware_in_one_hop(handler)
    assert not iscoroutinefunction(handler._middleware_chain)
    host = [(b"host", b"testserver")]
    response = await HttpCommunicator(handler, "GET", "/healthz", headers=host).get_response(
        timeout=10
    )
    assert response["status"] == 200
    headers = {name.lower(): value for name, value in response["headers"]}
    assert headers[b"x-content-type-options"] == b"nosniff"  # Django's middleware ran
    response = await HttpCommunicator(handler, "GET", "/api/v1/emails/", headers=host).get_response(
        timeout=10
    )
    assert response["status"] == 401
