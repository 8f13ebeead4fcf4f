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
loop time per connecting socket than the read itself (docs/performance.md).

Reads run in NOTIFICATIONS_READ_THREADS threads of their own, and each keeps its connection
between reads: handed back to the pool after every read, a connection was checked again when
taken (the pool's `SELECT 1` for CONN_HEALTH_CHECKS), a round trip per connect-path visit.
The retry above stands in for that check, and the fixed number of threads bounds what the
reads hold of the pool (settings: DATABASE_POOL_MAX_SIZE leaves room for requests).

Reads that many sockets make at once (every socket connecting, after a deploy) go through a
`BatchedRead`: the reads that arrive while one database visit is under way wait for the next,
which serves them all with one query. Under load that next visit waits a moment longer
(NOTIFICATIONS_READ_BATCH_WINDOW) for more to join it: a visit costs this process about as
much CPU for one socket as for ten (the driver's round trip), so at 1,200 connections/s two
milliseconds cut the CPU per connection by a tenth, and six by another tenth when 5,000
sockets of 500 users connect (docs/performance.md); a lone read still goes at once.
"""

import asyncio
import functools
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from notifications import compat
from notifications.realtime.waiters import settle


def _read_with_one_retry(function, args, kwargs):
    compat.skip_health_check(connection)  # the retry below stands in for the ping
    try:
        return function(*args, **kwargs)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return function(*args, **kwargs)


@functools.cache
def read_threads() -> ThreadPoolExecutor:
    """The threads every read runs in (each with the connection it keeps)."""
    return ThreadPoolExecutor(
        max_workers=settings.NOTIFICATIONS_READ_THREADS, thread_name_prefix="notify-read"
    )


def read_from_database(function):
    """`function` as a coroutine function run in a pool thread (see the module docstring)."""

    @functools.wraps(function)
    async def read(*args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            read_threads(), _read_with_one_retry, function, args, kwargs
        )

    return read


class BatchedRead:
    """`await batched(key)`: one key's value, read together with the keys other tasks asked
    for meanwhile by `read_many(keys) -> {key: value}` (a function for read_from_database
    that returns a value for every key).

    One visit at a time: a lone read goes at once, and under load (keys queued during the
    previous visit) the next visit waits `window()` seconds more, then takes everything
    queued (at most `limit` keys), so the database, the thread pool and the loop each see one
    hop per batch instead of one per socket.
    """

    def __init__(
        self, read_many, *, limit: int = 500, window: Callable[[], float] = lambda: 0.0
    ) -> None:
        self._read_many = read_many
        self._limit = limit
        self._window = window
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict = {}
        self._visiting: asyncio.Task | None = None

    async def __call__(self, key):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # futures belong to one loop (a test's, a restarted server's)
            self._loop, self._waiting, self._visiting = loop, {}, None
        waiter = loop.create_future()
        self._waiting.setdefault(key, []).append(waiter)
        if self._visiting is None:
            self._visiting = loop.create_task(self._visit_while_waiting())
        return await waiter

    async def _visit_while_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            busy = False
            while self._waiting:
                if busy and (window := self._window()) > 0:
                    await asyncio.sleep(window)
                busy = True
                keys = list(itertools.islice(self._waiting, self._limit))
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    values = await loop.run_in_executor(
                        read_threads(), _read_with_one_retry, self._read_many, (keys,), {}
                    )
                    found = [(waiters, values[key]) for key, waiters in batch.items()]
                except asyncio.CancelledError:
                    for waiters in batch.values():
                        settle(waiters, cancelled=True)
                    raise
                except Exception as exc:
                    for waiters in batch.values():
                        settle(waiters, exception=exc)
                    continue
                for waiters, value in found:
                    settle(waiters, value=value)
        finally:
            if self._visiting is asyncio.current_task():
                self._visiting = None
