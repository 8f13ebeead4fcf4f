"""Futures that several tasks wait on, settled together: the readers of one database visit
(database.BatchedRead), the sockets of one SUBSCRIBE (layers); and a task stopped for good."""

import asyncio
from collections.abc import Iterable


def settle(
    waiters: Iterable[asyncio.Future], *, value=None, exception=None, cancelled=False
) -> None:
    """Give each waiter `value`, `exception` or a cancellation; one already settled (its task
    went away meanwhile) is left alone. An exception is marked retrieved: a waiter whose task
    went away must not log "exception was never retrieved"."""
    for waiter in waiters:
        if waiter.done():
            continue
        if cancelled:
            waiter.cancel()
        elif exception is not None:
            waiter.set_exception(exception)
            waiter.exception()
        else:
            waiter.set_result(value)


async def cancel_until_done(task: asyncio.Task, *, every: float = 0.1) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `every` seconds
    while it goes on.

    One cancellation is not always enough: Python 3.11's asyncio.wait_for, which redis-py
    puts around every command it sends when its pool has a socket_timeout, swallows a
    cancellation that arrives as the write completes, and the caller carries on (fixed in
    3.12). channels-redis's core layer then goes back to waiting for the channel's next
    message, which for a channel that has left its group never comes.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every)
