"""Clients for tests against live servers: connect-and-authenticate, read a close code, and a
reader that reconnects and resumes like a well-behaved frontend."""

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def ws_connect(url: str, token: str, **first_frame):
    """Open and authenticate a socket; return it with the `connected` message."""
    ws = await websockets.connect(url, open_timeout=20, max_size=2**20)
    await ws.send(json.dumps({"token": token, **first_frame}))
    connected = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert connected["type"] == "connected", connected
    return ws, connected


async def close_code(ws, timeout: float = 10) -> int:
    """Read until the server closes; return its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


class ResumingReader:
    """A client that keeps one socket up: on any close it reconnects (with a short backoff,
    to the next of its URLs) and resumes with the last id it saw, recording every event id."""

    def __init__(self, url: str | list[str], token: str) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.token = token
        self.ids: list[int] = []
        self.close_codes: list[int] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "ResumingReader":
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            try:
                first = {"last_event_id": self.ids[-1] if self.ids else 0}
                ws, _ = await ws_connect(self.urls[0], self.token, **first)
                self.connected.set()
                async for frame in ws:
                    message = json.loads(frame)
                    if "id" in message:
                        self.ids.append(message["id"])
            except ConnectionClosed as exc:
                self.close_codes.append(exc.rcvd.code if exc.rcvd else 1006)
            except (OSError, TimeoutError, InvalidStatus, AssertionError):
                pass
            self.connected.clear()
            self.urls.append(self.urls.pop(0))
            await asyncio.sleep(0.2)

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while len(self.ids) < count:
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task
