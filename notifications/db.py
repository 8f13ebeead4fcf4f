"""Database reads from the event loop.

Channels' database_sync_to_async runs every call in one shared thread and closes stale
connections around it, which with CONN_HEALTH_CHECKS costs a `SELECT 1` round trip per call:
on the connect path every socket's reads queued behind that thread and paid for the ping. A
read can simply be retried instead: `read_from_database(f)` runs `f` in a pool thread (each
with its own connection) without the ping, and when the connection turns out broken (a
database restart) closes it and runs `f` once more on a fresh one. Only for functions that
write nothing.

The hop is the loop's own `run_in_executor`, not asgiref's SyncToAsync: a read needs no
context variables, thread-sensitivity or deadlock bookkeeping, and that machinery cost more
loop time per connecting socket than the read itself (README, Performance).
"""

import asyncio
import functools

from django.db import InterfaceError, OperationalError, close_old_connections, connection


def _read_with_one_retry(function, args, kwargs):
    close_old_connections()
    connection.health_check_done = True  # the retry below stands in for the ping
    try:
        try:
            return function(*args, **kwargs)
        except (InterfaceError, OperationalError):
            if connection.in_atomic_block:
                raise
            connection.close()
            return function(*args, **kwargs)
    finally:
        close_old_connections()


def read_from_database(function):
    """`function` as a coroutine function run in a pool thread (see the module docstring)."""

    @functools.wraps(function)
    async def read(*args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            None, _read_with_one_retry, function, args, kwargs
        )

    return read
