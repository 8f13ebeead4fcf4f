"""An HTTP proxy for tests that blocks WebSocket upgrades, as some corporate proxies and mobile
carriers do, while passing every other request through to a server unchanged."""

import asyncio
import contextlib
import threading

from tests.support.redis import free_port


class UpgradeBlockingProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`target_port`.

    While `blocking` is true, a request that asks for a WebSocket upgrade is answered as
    `mode` says: "drop" closes the connection without a word (a failed upgrade with no close
    frame), "refuse" answers 403. Runs its own event loop in a thread, so it serves sync and
    async tests and survives the target's restarts (a refused forward closes that client).
    """

    def __init__(self, target_port: int, *, mode: str = "drop") -> None:
        self.target_port = target_port
        self.port = free_port()
        self.mode = mode
        self.blocking = True
        self.blocked = 0  # upgrades turned away
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "UpgradeBlockingProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        lines = head.decode("latin-1").lower().split("\r\n")
        if self.blocking and any(
            line.startswith("upgrade:") and "websocket" in line for line in lines
        ):
            self.blocked += 1
            if self.mode == "refuse":
                writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                with contextlib.suppress(OSError):
                    await writer.drain()
            writer.close()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        upstream.write(head)
        await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
