"""The pieces that let the consumer write an event without a task: taking a free lock at once,
and a task taking over a send coroutine that was started by hand and had to wait."""

import asyncio

import pytest

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
