"""Futures that several tasks wait on, settled together: the readers of one database visit
(database.BatchedRead), the sockets of one SUBSCRIBE (layers)."""

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
