"""notifications.realtime.waiters: settling the futures of a batch at once, and stopping a task
that does not stop at the first cancellation."""

import asyncio

from notifications.realtime.waiters import cancel_until_done, settle


async def test_each_waiter_gets_the_value_the_failure_or_the_cancellation():
    loop = asyncio.get_running_loop()
    valued, failed, cancelled = ([loop.create_future() for _ in range(2)] for _ in range(3))
    settle(valued, value=7)
    settle(failed, exception=ValueError("down"))
    settle(cancelled, cancelled=True)
    assert [await waiter for waiter in valued] == [7, 7]
    assert all(isinstance(waiter.exception(), ValueError) for waiter in failed)
    assert all(waiter.cancelled() for waiter in cancelled)


async def test_a_waiter_settled_before_is_left_as_it_was():
    loop = asyncio.get_running_loop()
    gone, waiting = loop.create_future(), loop.create_future()
    gone.cancel()  # its task went away
    settle([gone, waiting], value=1)
    assert gone.cancelled() and waiting.result() == 1


async def test_a_task_that_swallows_a_cancellation_is_cancelled_until_it_ends():
    swallowed = []

    async def stubborn():
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # as redis-py's send under Python 3.11's wait_for

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_until_done(task, every=0.01), 5)
    assert task.cancelled() and swallowed == [True]


async def test_a_task_that_ends_at_once_or_has_ended_is_left_as_it_ended():
    async def quick():
        return 1

    task = asyncio.create_task(quick())
    await task
    await cancel_until_done(task)
    assert task.result() == 1
    waiting = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    await cancel_until_done(waiting)
    assert waiting.cancelled()
