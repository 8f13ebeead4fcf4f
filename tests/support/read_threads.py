"""The realtime read threads (notifications/realtime/database.py) keep their connections from
test to test; a test that needs them fresh closes them first."""

import asyncio
import threading

from django.conf import settings
from django.db import connection

from notifications.realtime.database import read_from_database


async def close_read_thread_connections() -> None:
    """Close the connection of every read thread: each thread takes exactly one close, since
    the closes wait for each other."""
    threads = settings.NOTIFICATIONS_READ_THREADS
    everyone = threading.Barrier(threads)

    def close_this_threads_connection():
        everyone.wait(10)
        connection.close()

    await asyncio.gather(
        *(read_from_database(close_this_threads_connection)() for _ in range(threads))
    )
