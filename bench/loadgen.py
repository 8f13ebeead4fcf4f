"""The load generator's sockets and streams, and the arithmetic of a step.

Each socket is an asyncio.Protocol driving websockets' sans-I/O ClientProtocol: no task, no
future and no JSON parse per received event (an envelope's id is read from its first bytes),
so one core holds 10,000 sockets and still reads faster than one server core can write. A
stream (server-sent events, PROTOCOL §5) is the same over a chunked HTTP response: the id comes
from its `id:` line.
"""

import asyncio
import json
import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench.infra import collect_garbage_now_only

ID_PREFIX = b'{"id":'


class BenchConnection(asyncio.Protocol):
    """What a step reads of a client connection: its user, the (id, receipt time) of each
    event, `connected` (a future), whether it is open; and close()."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future = asyncio.get_running_loop().create_future()
        self.last_event_id = 0
        self.received: list[tuple[int, float]] = []
        self.close_code: int | None = None

    def connection_lost(self, exc) -> None:
        self._fail(exc or ConnectionError("connection lost"))
        self.transport = None

    def _fail(self, exc: BaseException) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc)
            self.connected.exception()  # retrieved: a failed connect is counted, not raised

    @property
    def open(self) -> bool:
        return self.transport is not None and self.close_code is None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class BenchSocket(BenchConnection):
    """One socket: handshake, first-frame auth, then record (id, receipt time)."""

    def __init__(self, url: str, token: str, user: str) -> None:
        super().__init__(user)
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.token = token

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self._fail(self.protocol.handshake_exc)
                else:
                    self.protocol.send_text(json.dumps({"token": self.token}).encode())
            elif event.opcode is Opcode.TEXT:
                payload = event.data
                if payload.startswith(ID_PREFIX):
                    self.received.append((int(payload[6 : payload.index(b",", 6)]), now))
                else:
                    self._control(json.loads(payload))
            elif event.opcode is Opcode.CLOSE:
                self.close_code = self.protocol.close_code
                self._fail(ConnectionError(f"closed {self.close_code}"))
        self._flush()
        if self.protocol.close_expected() and self.transport is not None:
            self.transport.close()

    # helpers

    def _control(self, message: dict) -> None:
        if message.get("type") == "connected" and not self.connected.done():
            self.last_event_id = int(message.get("last_event_id") or 0)
            self.connected.set_result(True)

    def _flush(self) -> None:
        if self.transport is None:
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)


class BenchStream(BenchConnection):
    """One event stream: GET with a Bearer header, then record (id, receipt time) of each
    event."""

    def __init__(self, url: str, token: str, user: str) -> None:
        super().__init__(user)
        parts = urlsplit(url)
        self.request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self._head = True
        self._raw = b""  # the chunked body not decoded yet
        self._text = b""  # decoded event-stream text not yet split into messages

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._raw += data
        if self._head:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._raw.startswith(b"HTTP/1.1 200"):
                self._fail(ConnectionError(self._raw[:40].decode("latin-1")))
                self.close()
                return
            self._head, self._raw = False, self._raw[end + 4 :]
        while True:  # chunked transfer coding: size line, data, CRLF
            end = self._raw.find(b"\r\n")
            if end < 0:
                break
            size = int(self._raw[:end], 16)
            if len(self._raw) < end + 2 + size + 2:
                break
            self._text += self._raw[end + 2 : end + 2 + size]
            self._raw = self._raw[end + 2 + size + 2 :]
        *messages, self._text = self._text.split(b"\n\n")
        for message in messages:
            if message.startswith(b"id: "):
                self.received.append((int(message[4 : message.index(b"\n")]), now))
            elif message.startswith(b"event: connected\n"):
                content = json.loads(message[message.index(b"data: ") + 6 :])
                self.last_event_id = int(content.get("last_event_id") or 0)
                if not self.connected.done():
                    self.connected.set_result(True)
            elif message.startswith(b"event: closed\n"):
                self.close_code = json.loads(message[message.index(b"data: ") + 6 :])["code"]
                self._fail(ConnectionError(f"closed {self.close_code}"))


# Each source address has ephemeral ports of its own (about 28,000 on Linux): more sockets than
# that to one server are spread over these loopback addresses. Only then: spread over 64 of
# them, 10,000 sockets cost the servers 7-21 % more CPU to accept (docs/performance.md).
LOOPBACK_SOURCES = tuple(f"127.0.1.{n}" for n in range(1, 256))
PORTS_KEPT_FREE = 2000  # of each address's range, for everything else the machine connects


def ephemeral_ports() -> int:
    """How many ephemeral ports a source address has (Linux's ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(high) - int(low) + 1
    except (OSError, ValueError):
        return 16384  # IANA's 49152-65535


def source_addresses(count: int, per_source: int) -> tuple[str, ...]:
    """The addresses `count` sockets to one loopback server come from, at most `per_source`
    from each: none (the system chooses, 127.0.0.1) when one address holds them all."""
    if count <= per_source:
        return ()
    needed = math.ceil(count / per_source)
    if needed > len(LOOPBACK_SOURCES):
        raise ValueError(f"{count} sockets need {needed} source addresses")
    try:
        with socket.socket() as probe:
            probe.bind((LOOPBACK_SOURCES[needed - 1], 0))
    except OSError:
        return ()  # only 127.0.0.1 here (not Linux): the sockets past its ports will fail
    return LOOPBACK_SOURCES[:needed]


async def open_sockets(
    url: str,
    credentials: list[tuple[str, str]],
    *,
    concurrency: int,
    within: float = 30,
    kind: type[BenchConnection] = BenchSocket,
    per_source: int | None = None,
) -> tuple[list[BenchConnection], int, float]:
    """Open and authenticate one socket (or, with kind=BenchStream and the stream's URL, one
    event stream) per (user, token), `concurrency` at a time.

    More sockets than a source address has ports for (`per_source`, by default its range less
    PORTS_KEPT_FREE) take turns among loopback source addresses (`source_addresses`).
    Returns the authenticated sockets, the number that failed, and the elapsed seconds.
    """
    loop = asyncio.get_running_loop()
    parsed = urlsplit(url)
    gate = asyncio.Semaphore(concurrency)
    sockets: list[BenchSocket] = []
    failed = 0
    if per_source is None:
        per_source = ephemeral_ports() - PORTS_KEPT_FREE
    sources = ()
    if parsed.hostname.startswith("127."):
        sources = source_addresses(len(credentials), per_source)

    async def one(index: int, user: str, token: str) -> None:
        nonlocal failed
        source = (sources[index % len(sources)], 0) if sources else None
        async with gate:
            try:
                _, sock = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: kind(url, token, user),
                        parsed.hostname,
                        parsed.port,
                        local_addr=source,
                    ),
                    within,
                )
                await asyncio.wait_for(asyncio.shield(sock.connected), within)
            except Exception:
                failed += 1
                return
            sockets.append(sock)

    started = time.perf_counter()
    await asyncio.gather(
        *(one(index, user, token) for index, (user, token) in enumerate(credentials))
    )
    return sockets, failed, time.perf_counter() - started


def close_sockets(sockets: list[BenchSocket]) -> None:
    for sock in sockets:
        sock.close()


# --- a step's arithmetic ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Delivery:
    """What the sockets received against what was published (the side table)."""

    published: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    latencies: list[float] = field(default_factory=list)
    first_publish: float = math.inf
    last_receipt: float = 0.0

    def summary(self) -> dict:
        ms = [value * 1000 for value in self.latencies]
        span = self.last_receipt - self.first_publish
        return {
            "published": self.published,
            "expected": self.expected,
            "delivered": self.delivered,
            "delivered_per_s": round(self.delivered / span, 1) if span > 0 else 0.0,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "latency_ms": {
                "p50": round(percentile(ms, 0.50), 2),
                "p95": round(percentile(ms, 0.95), 2),
                "p99": round(percentile(ms, 0.99), 2),
                "max": round(max(ms), 2) if ms else math.nan,
            },
        }


def tally(sockets: list[BenchSocket], records: list[tuple[str, int, float]]) -> Delivery:
    """Compare what each socket received with what was published for its user."""
    published_at: dict[tuple[str, int], float] = {}
    by_user: dict[str, set[int]] = {}
    for user, event_id, at in records:
        published_at[(user, event_id)] = at
        by_user.setdefault(user, set()).add(event_id)
    result = Delivery(published=len(records))
    if records:
        result.first_publish = min(at for _, _, at in records)
    for sock in sockets:
        wanted = by_user.get(sock.user, set())
        result.expected += len(wanted)
        seen: set[int] = set()
        highest = 0
        for event_id, at in sock.received:
            if event_id not in wanted:
                continue  # an earlier step's straggler, or a replayed event
            if event_id in seen:
                result.duplicated += 1
                continue
            seen.add(event_id)
            if event_id < highest:
                result.out_of_order += 1
            highest = max(highest, event_id)
            result.delivered += 1
            result.latencies.append(at - published_at[(sock.user, event_id)])
            result.last_receipt = max(result.last_receipt, at)
        result.lost += len(wanted - seen)
    return result


def received_count(sockets: list[BenchSocket]) -> int:
    return sum(len(sock.received) for sock in sockets)


async def wait_for_deliveries(sockets: list[BenchSocket], expected: int, within: float) -> None:
    """Wait until the sockets hold `expected` events in all, or `within` seconds pass."""
    deadline = time.monotonic() + within
    # Polled: a wake-up per received event would cost the load generator more than this.
    while received_count(sockets) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def reset(sockets: list[BenchSocket]) -> None:
    for sock in sockets:
        sock.received = []
    collect_garbage_now_only()
