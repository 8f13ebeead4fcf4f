"""Delivery: hand stored events to the channel layer after commit, never blocking the caller.

Sends go out from the ASGI server's own loop when the publisher runs in a thread of it (one set
of layer connections, and the only way to reach the in-memory layer's sockets), else from one
background loop per process (commands, task workers, scripts). Each loop sends in publish
order; a layer that is down costs live latency only: sockets gap-fill or replay from the store.
"""

import asyncio
import atexit
import collections
import logging
import threading
import weakref

from channels.layers import get_channel_layer

from notifications import compat
from notifications.operations import metrics

logger = logging.getLogger(__name__)

# Sends waiting for a slow or unreachable channel layer, per event loop; past this the oldest
# are dropped (the events are stored, so sockets gap-fill or replay them).
MAX_QUEUED_SENDS = 10_000
SEND_BATCH = 256  # sends per pipelined round trip


def deliver(group: str, message: dict) -> None:
    """Hand `message` to the channel layer for `group`, in publish order, without blocking."""
    loop = compat.server_event_loop() or _background_loop.get()
    loop.call_soon_threadsafe(_sender_for(loop).enqueue, group, message)


class _LoopSender:
    """Sends queued messages from one event loop, one at a time, in the order published."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[tuple[str, dict]] = collections.deque()
        self.worker: asyncio.Task | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def enqueue(self, group: str, message: dict) -> None:
        if len(self.queue) >= MAX_QUEUED_SENDS:
            dropped_group, dropped = self.queue.popleft()
            logger.warning(
                "channel layer backlog full: live send of %s to %s dropped; kept for replay",
                dropped.get("event_id", dropped["type"]),
                dropped_group,
            )
        self.queue.append((group, message))
        self.idle.clear()
        if self.worker is None or self.worker.done():
            self.worker = self.loop.create_task(self._run())

    async def _run(self) -> None:
        layer = get_channel_layer()
        # The pub/sub layer pipelines a backlog: one round trip for many sends.
        send_many = getattr(layer, "group_send_many", None)
        while self.queue:
            if send_many is None:
                batch = [self.queue.popleft()]
                send = layer.group_send(*batch[0])
            else:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), SEND_BATCH))]
                send = send_many(batch)
            try:
                await send
            except Exception:
                # The events are stored: sockets will gap-fill or replay them.
                for _, message in batch:
                    metrics.CHANNEL_LAYER_SEND_FAILURES.inc()
                    logger.warning(
                        "channel layer send failed for event %s of %s; kept for replay",
                        message.get("event_id"),
                        message.get("user_id"),
                        exc_info=True,
                    )
        self.idle.set()

    async def drain(self) -> None:
        await self.idle.wait()


_senders: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSender]" = (
    weakref.WeakKeyDictionary()
)
_senders_lock = threading.Lock()


def _sender_for(loop: asyncio.AbstractEventLoop) -> _LoopSender:
    with _senders_lock:
        sender = _senders.get(loop)
        if sender is None:
            sender = _senders[loop] = _LoopSender(loop)
        return sender


class _BackgroundLoop:
    """A daemon thread with one long-lived event loop, for publishers outside any ASGI server
    (management commands, task workers, plain scripts)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="notifications-publisher", daemon=True
                ).start()
            return self._loop

    def drain(self, timeout: float) -> bool:
        loop = self._loop
        if loop is None or not loop.is_running():
            return True
        future = asyncio.run_coroutine_threadsafe(_sender_for(loop).drain(), loop)
        try:
            future.result(timeout)
        except TimeoutError:
            return False
        return True


_background_loop = _BackgroundLoop()


def flush_deliveries(timeout: float = 5.0) -> bool:
    """Wait until events published from sync code outside a server have been handed to the
    channel layer. Returns False on timeout. Called at exit so a command loses no live send."""
    return _background_loop.drain(timeout)


async def aflush_deliveries() -> None:
    """Wait until events queued on the running loop have been handed to the channel layer."""
    await _sender_for(asyncio.get_running_loop()).drain()


atexit.register(flush_deliveries)
