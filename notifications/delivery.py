"""Delivery: hand stored events to the channel layer after commit, never blocking the caller.

On the Redis pub/sub layer every send goes out from one sender thread per process, with a
blocking Redis client: no event loop turn per event, and a server's loop never waits behind a
publisher. Other layers send from the ASGI server's own loop when the publisher runs in a thread
of it (the only way to reach the in-memory layer's sockets), else from that thread's own loop.
Each sends in publish order; a layer that is down costs live latency only: sockets gap-fill or
replay from the store.
"""

import asyncio
import atexit
import collections
import logging
import os
import queue
import threading
import weakref

from channels.layers import get_channel_layer

from notifications import compat
from notifications.operations import metrics

logger = logging.getLogger(__name__)

# Sends waiting for a slow or unreachable channel layer, per sender; past this the oldest
# are dropped (the events are stored, so sockets gap-fill or replay them).
MAX_QUEUED_SENDS = 10_000
SEND_BATCH = 256  # sends per pipelined round trip


def deliver(group: str, message: dict) -> None:
    """Hand `message` to the channel layer for `group`, in publish order, without blocking."""
    # A layer that sends from a thread does so in a server too: the server's sockets never
    # wait behind a publisher's sends. Asked of the class: channels-redis's own pub/sub layer
    # looks a missing attribute up on the running loop's layer, and this thread has no loop.
    sends_from_thread = hasattr(type(get_channel_layer()), "group_send_many_from_thread")
    loop = None if sends_from_thread else compat.server_event_loop()
    if loop is None:
        _thread_sender.enqueue(group, message)
    else:
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
            _log_dropped(*self.queue.popleft())
        self.queue.append((group, message))
        self.idle.clear()
        if self.worker is None or self.worker.done():
            self.worker = self.loop.create_task(self._run())

    async def _run(self) -> None:
        layer = get_channel_layer()
        while self.queue:
            send = self.queue.popleft()
            try:
                await layer.group_send(*send)
            except Exception:
                _log_failed_sends([send])
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


class _ThreadSender:
    """One daemon thread that sends, in publish order, what publishers outside any ASGI server
    (management commands, task workers, plain scripts) deliver. A layer with a blocking send
    (the Redis pub/sub layer's `group_send_many_from_thread`) is called directly; any other
    runs on an event loop this thread keeps."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.guard = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        os.register_at_fork(after_in_child=self._forget_thread)

    def enqueue(self, group: str, message: dict) -> None:
        if self.thread is None:
            self._start()
        self.queue.put((group, message))

    def drain(self, timeout: float) -> bool:
        if self.thread is None:
            return True
        sent = threading.Event()
        self.queue.put(sent)  # set once everything queued before it was sent
        return sent.wait(timeout)

    def _start(self) -> None:
        with self.guard:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="notifications-publisher", daemon=True
                )
                self.thread.start()

    def _forget_thread(self) -> None:
        # A forked child has the queue but not the thread: its first send starts one.
        self.queue = queue.SimpleQueue()
        self.thread, self.loop = None, None

    def _run(self) -> None:
        while True:
            batch, marker = self._next_batch()
            if batch:
                self._send(batch)
            if marker is not None:
                marker.set()

    def _next_batch(self) -> tuple[list[tuple[str, dict]], threading.Event | None]:
        """Up to SEND_BATCH queued sends, ending early at a drain marker."""
        batch: list[tuple[str, dict]] = []
        item = self.queue.get()
        while True:
            if isinstance(item, threading.Event):
                return batch, item
            batch.append(item)
            if len(batch) == SEND_BATCH:
                break
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
        backlog = self.queue.qsize()
        if backlog > MAX_QUEUED_SENDS:
            _drop_oldest(batch, backlog - MAX_QUEUED_SENDS)
        return batch, None

    def _send(self, batch: list[tuple[str, dict]]) -> None:
        layer = get_channel_layer()
        try:
            send_from_thread = getattr(type(layer), "group_send_many_from_thread", None)
            if send_from_thread is not None:
                send_from_thread(layer, batch)
                return
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            for group, message in batch:
                self.loop.run_until_complete(layer.group_send(group, message))
        except Exception:
            _log_failed_sends(batch)


def _drop_oldest(batch: list[tuple[str, dict]], count: int) -> None:
    for group, message in batch[:count]:
        _log_dropped(group, message)
    del batch[:count]


def _log_dropped(group: str, message: dict) -> None:
    logger.warning(
        "channel layer backlog full: live send of %s to %s dropped; kept for replay",
        message.get("event_id", message["type"]),
        group,
    )


def _log_failed_sends(batch: list[tuple[str, dict]]) -> None:
    # The events are stored: sockets will gap-fill or replay them.
    for _, message in batch:
        metrics.CHANNEL_LAYER_SEND_FAILURES.inc()
        logger.warning(
            "channel layer send failed for event %s of %s; kept for replay",
            message.get("event_id"),
            message.get("user_id"),
            exc_info=True,
        )


_thread_sender = _ThreadSender()


def flush_deliveries(timeout: float = 5.0) -> bool:
    """Wait until events published from sync code outside a server have been handed to the
    channel layer. Returns False on timeout. Called at exit so a command loses no live send."""
    return _thread_sender.drain(timeout)


async def aflush_deliveries() -> None:
    """Wait until events queued on the running loop or the sender thread have been handed to
    the channel layer."""
    await _sender_for(asyncio.get_running_loop()).drain()
    await asyncio.to_thread(_thread_sender.drain, 10.0)


atexit.register(flush_deliveries)
