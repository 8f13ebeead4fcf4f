"""notifications.realtime.waiters: settling the futures of a batch at once."""

import asyncio

from notifications.realtime.waiters import settle


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
