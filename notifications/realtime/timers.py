"""A socket's clocks: its one pending timer (the auth deadline, then the token's expiry) and the
token bucket that limits the frames a client may send."""

import asyncio
import time
from collections.abc import Awaitable, Callable


class Timer:
    """At most one pending callback. A timer handle, not a task per socket: sockets idle for
    hours cost no coroutine."""

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Future | None = None

    def schedule(self, delay: float, callback: Callable[[], Awaitable]) -> None:
        """Run `callback()` in `delay` seconds, in place of anything scheduled before."""
        self.cancel()
        self._handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._fire, callback)

    def _fire(self, callback) -> None:
        self._handle = None
        # Referenced until it ends: the loop itself keeps only a weak reference to a task.
        self._task = asyncio.ensure_future(callback())

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class FrameBucket:
    """A token bucket: `rate` frames a second, bursts of `burst`."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self._allowance, self._at = self.burst, time.monotonic()

    def take(self) -> bool:
        """Count one frame; False when the client is over the limit."""
        now = time.monotonic()
        self._allowance = min(self.burst, self._allowance + (now - self._at) * self.rate)
        self._at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True
