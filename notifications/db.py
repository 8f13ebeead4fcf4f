"""Database reads from the event loop.

Channels' database_sync_to_async runs every call in one shared thread and closes stale
connections around it, which with CONN_HEALTH_CHECKS costs a `SELECT 1` round trip per call:
on the connect path every socket's reads queued behind that thread and paid for the ping. A
read can simply be retried instead: `read_from_database(f)` runs `f` in a pool thread (each
with its own connection) without the ping, and when the connection turns out broken (a
database restart) closes it and runs `f` once more on a fresh one. Only for functions that
write nothing.
"""

from channels.db import DatabaseSyncToAsync
from django.db import InterfaceError, OperationalError, close_old_connections, connection


class _RetriedRead(DatabaseSyncToAsync):
    def thread_handler(self, loop, *args, **kwargs):
        close_old_connections()
        connection.health_check_done = True  # the retry below stands in for the ping
        try:
            try:
                return super(DatabaseSyncToAsync, self).thread_handler(loop, *args, **kwargs)
            except (InterfaceError, OperationalError):
                if connection.in_atomic_block:
                    raise
                connection.close()
                return super(DatabaseSyncToAsync, self).thread_handler(loop, *args, **kwargs)
        finally:
            close_old_connections()


def read_from_database(function):
    """`function` as a coroutine function run in a pool thread (see the module docstring)."""
    return _RetriedRead(function, thread_sensitive=False)
