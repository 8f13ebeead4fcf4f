"""A minimal server-sent events reader over asyncio streams (HTTP/1.1, http and https): what
the Python client reads the event stream (PROTOCOL §5) with, without another dependency.

    response = await open_event_stream(url, headers={"Authorization": f"Bearer {token}"})
    if response.status == 200:
        async for message in response.messages():
            print(message.event, message.id, message.data)
"""

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_LINE = 1024 * 1024  # an envelope is at most a 64 KiB payload; anything far past it is junk


class StreamError(Exception):
    """The response is not a well-formed HTTP/1.1 answer."""


@dataclass(frozen=True)
class Message:
    """One dispatched SSE message (comments are not messages)."""

    event: str  # "message" when the server named none
    data: str
    id: str | None


class EventStreamResponse:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.comments = 0  # `: ping` lines seen
        self.received_at = asyncio.get_running_loop().time()  # the last bytes: alive then
        self._chunked = False
        self._left = 0  # bytes left in the current chunk
        self._buffer = b""

    async def _read_head(self) -> None:
        line = await self.reader.readline()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise StreamError(f"not an HTTP response: {line[:80]!r}")
        self.status = int(parts[1])
        while True:
            line = (await self.reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    async def _read_some(self) -> bytes:
        """The next bytes of the body; b"" at its end."""
        data = await self._read_body()
        self.received_at = asyncio.get_running_loop().time()
        return data

    async def _read_body(self) -> bytes:
        if not self._chunked:
            return await self.reader.read(65536)
        if self._left == 0:
            size_line = await self.reader.readline()
            if not size_line:
                return b""
            try:
                self._left = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                raise StreamError(f"bad chunk size {size_line[:40]!r}") from None
            if self._left == 0:
                return b""
        data = await self.reader.read(min(self._left, 65536))
        if not data:
            return b""
        self._left -= len(data)
        if self._left == 0:
            await self.reader.readexactly(2)  # the chunk's CRLF
        return data

    async def body(self) -> bytes:
        """The whole body (of a refusal: a short JSON answer)."""
        if not self._chunked and "content-length" in self.headers:
            return await self.reader.readexactly(int(self.headers["content-length"]))
        parts = []
        while chunk := await self._read_some():
            parts.append(chunk)
        return b"".join(parts)

    async def json(self) -> dict:
        return json.loads(await self.body())

    async def _lines(self) -> AsyncIterator[str]:
        while True:
            while b"\n" not in self._buffer:
                chunk = await self._read_some()
                if not chunk:
                    return
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE:
                    raise StreamError("a line of the event stream is too long")
            line, self._buffer = self._buffer.split(b"\n", 1)
            yield line.decode().removesuffix("\r")

    async def messages(self) -> AsyncIterator[Message]:
        """The stream's messages, as an EventSource would dispatch them, until it ends."""
        event, data, last_id = "", [], None
        async for line in self._lines():
            if not line:
                if data:
                    yield Message(event or "message", "\n".join(data), last_id)
                event, data = "", []
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                last_id = value

    def stop(self) -> None:
        """Stop reading: the messages end (a dead connection, or one to leave)."""
        self.writer.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


async def open_event_stream(
    url: str, *, headers: dict[str, str] | None = None, connect_timeout: float = 15.0
) -> EventStreamResponse:
    """GET `url` and read the response's status and headers (any status: the caller looks)."""
    parts = urlsplit(url)
    secure = parts.scheme in {"https", "wss"}
    port = parts.port or (443 if secure else 80)
    async with asyncio.timeout(connect_timeout):
        reader, writer = await asyncio.open_connection(
            parts.hostname,
            port,
            ssl=ssl.create_default_context() if secure else None,
            limit=MAX_LINE,
        )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        response = EventStreamResponse(reader, writer)
        try:
            await response._read_head()
        except BaseException:
            writer.close()
            raise
    return response
