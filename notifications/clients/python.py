"""NotificationClient: the Python side of the wire protocol (PROTOCOL §1-§3, §5) for services
and scripts. One connection at a time; resumes with `last_event_id`, backs off with full
jitter, asks a token callback after 4001/4002, pings, and refreshes the token before it
expires. `transport="auto"` (the default) uses the WebSocket and falls back to the event
stream over server-sent events when upgrades fail while HTTP works, trying the WebSocket again
in the background; "websocket" and "sse" use only that one.

    client = NotificationClient(url, get_token=lambda: fetch_access_token())
    async for event in client.events():
        print(event["id"], event["type"], event["data"])
"""

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from notifications import compat
from notifications.clients.sse import EventStreamResponse, StreamError, open_event_stream
from notifications.close_codes import AUTH_CLOSE_CODES, CloseCode

logger = logging.getLogger(__name__)

TokenCallback = Callable[[], str | Awaitable[str]]

# A socket that stopped answering (no pong, no `connected`) is dropped and counts as 1006.
ABNORMAL_CLOSURE = 1006

TRANSPORTS = ("auto", "websocket", "sse")
# auto: this many upgrades in a row that failed without a close frame (or one refused with an
# HTTP status) mean something between us and the server blocks WebSockets.
FAILED_UPGRADES_BEFORE_FALLBACK = 2
# What an event stream's refusal (before any stream) means, as the socket's close code would.
REFUSAL_CODES = {401: CloseCode.INVALID_TOKEN, 429: CloseCode.POLICY}


def stream_url_for(url: str) -> str:
    """The event stream's URL (PROTOCOL §5) next to a socket's: ws[s]://HOST/.../ws ->
    http[s]://HOST/.../stream."""
    scheme, rest = url.split("://", 1)
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    path_start = rest.find("/")
    host, path = (rest, "") if path_start < 0 else (rest[:path_start], rest[path_start:])
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")] + "/stream"
    return f"{scheme}://{host}{path}"


class AuthenticationFailed(Exception):
    """The server refused our token and the token callback could not provide a better one."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True)
class StateChange:
    """One transition of the client: connecting, connected, reconnecting, auth_failed, closed.

    `delay` (seconds) is set while reconnecting; `close_code` is the close that caused it;
    `recovered` is the `connected` message's flag (False: reload state over REST).
    """

    state: str
    attempt: int = 0
    delay: float | None = None
    close_code: int | None = None
    recovered: bool | None = None
    transport: str | None = None  # "websocket" | "sse": the one connecting or connected


def backoff_ceiling(attempt: int, *, initial: float = 0.5, maximum: float = 30.0) -> float:
    """The upper bound of the `attempt`-th retry delay: min(maximum, initial * 2**attempt)."""
    return min(maximum, initial * 2 ** min(attempt, 30))


def backoff_delay(
    attempt: int,
    *,
    initial: float = 0.5,
    maximum: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full-jitter exponential backoff: uniform in [0, backoff_ceiling(attempt))."""
    return rand() * backoff_ceiling(attempt, initial=initial, maximum=maximum)


class _Reconnect(Exception):
    def __init__(self, code: int, *, at_once: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.at_once = at_once  # no backoff: a planned switch (new token, other transport)


class NotificationClient:
    """A self-healing subscription to one user's events.

    `get_token` returns an access token (sync or async); it is called for the first token, after
    a 4001/4002 close, and before the token expires. `token` may give the first token instead.
    `on_state(StateChange)` and `on_connected(dict)` are called synchronously on transitions.
    `transport` is "auto", "websocket" or "sse"; `stream_url` defaults to the socket URL with
    /ws turned into /stream; in auto mode the WebSocket is tried again every
    `websocket_retry_interval` seconds while the event stream is in use.
    """

    def __init__(
        self,
        url: str,
        get_token: TokenCallback,
        *,
        token: str | None = None,
        last_event_id: int | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        ping_interval: float = 25.0,
        pong_timeout: float = 10.0,
        connect_timeout: float = 15.0,
        refresh_before: float = 60.0,
        on_state: Callable[[StateChange], None] | None = None,
        on_connected: Callable[[dict[str, Any]], None] | None = None,
        rand: Callable[[], float] = random.random,
        origin: str | None = None,
        transport: str = "auto",
        stream_url: str | None = None,
        websocket_retry_interval: float = 60.0,
        stream_idle_timeout: float = 45.0,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.url = url
        self.transport_mode = transport
        self.stream_url = stream_url or stream_url_for(url)
        self.websocket_retry_interval = websocket_retry_interval
        self.stream_idle_timeout = stream_idle_timeout
        # The transport in use (or next to try), and the failed upgrades that led to it.
        self.active_transport = "sse" if transport == "sse" else "websocket"
        self._failed_upgrades = 0
        self._get_token = get_token
        self._token = token
        self.last_event_id = last_event_id
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.connect_timeout = connect_timeout
        self.refresh_before = refresh_before
        self._on_state = on_state
        self._on_connected = on_connected
        self._rand = rand
        self._origin = origin
        self.state = "idle"
        self.attempt = 0
        self.connection: dict[str, Any] | None = None
        self._ws: ClientConnection | None = None
        self._stream: EventStreamResponse | None = None
        self._closed = asyncio.Event()
        self._pong: asyncio.Event | None = None
        self._expires_at: float | None = None  # loop time

    # --- public API -------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every envelope for the user, in id order, each once, across reconnects.

        Ends after close(); raises AuthenticationFailed when the token callback cannot help.
        """
        auth_retried = False
        rejected: str | None = None
        auth_code: int | None = None
        while not self._closed.is_set():
            try:
                token = await self._usable_token(rejected)
            except AuthenticationFailed as exc:
                exc.close_code = exc.close_code or auth_code
                self._set_state("auth_failed", close_code=exc.close_code)
                raise
            self.active_transport = self._next_transport()
            self._set_state("connecting", close_code=auth_code)
            rejected = auth_code = None
            self.connection = None
            at_once = False
            try:
                session = (
                    self._stream_session(token)
                    if self.active_transport == "sse"
                    else self._session(token)
                )
                async with contextlib.aclosing(session) as session:
                    async for event in session:
                        yield event
                code = ABNORMAL_CLOSURE
            except _Reconnect as exc:
                code, at_once = exc.code, exc.at_once
            if self.connection is not None:
                auth_retried = False  # this token worked; a later 4002 (expiry) may retry once
            if self._closed.is_set():
                break
            if code in AUTH_CLOSE_CODES:
                # Never retry with the token the server just rejected; and when a brand-new
                # token is rejected too, stop rather than loop on a callback that cannot help.
                if auth_retried:
                    self._set_state("auth_failed", close_code=code)
                    raise AuthenticationFailed("a fresh token was rejected too", code)
                auth_retried = True
                rejected, auth_code, self._token = token, code, None
                continue
            if not at_once:
                await self._wait_before_retry(code)
        self._set_state("closed")

    def _next_transport(self) -> str:
        if self.transport_mode != "auto":
            return self.transport_mode
        if self._failed_upgrades >= FAILED_UPGRADES_BEFORE_FALLBACK:
            return "sse"
        return "websocket"

    async def close(self) -> None:
        """Close the connection (a socket with 1000) and end events()."""
        self._closed.set()
        ws = self._ws
        if ws is not None:
            await ws.close(CloseCode.NORMAL, "client closed")
        stream = self._stream
        if stream is not None:
            await stream.close()

    # --- one connection -----------------------------------------------------------------------

    async def _session(self, token: str) -> AsyncIterator[dict[str, Any]]:
        try:
            headers = {"Origin": self._origin} if self._origin else None
            # App-level ping/pong (the protocol's), not WebSocket pings: browsers cannot send
            # those, and the server's answer proves the consumer (not just the proxy) is alive.
            ws = await connect(
                self.url,
                additional_headers=headers,
                ping_interval=None,
                open_timeout=self.connect_timeout,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            logger.info("notification socket did not open: %s", exc)
            # An HTTP status instead of the upgrade: something in between refuses WebSockets.
            refused = isinstance(exc, InvalidStatus)
            self._failed_upgrades += FAILED_UPGRADES_BEFORE_FALLBACK if refused else 1
            raise _Reconnect(ABNORMAL_CLOSURE) from None
        self._ws = ws
        tasks: list[asyncio.Task] = []
        try:
            if self._closed.is_set():
                raise _Reconnect(CloseCode.NORMAL)
            first: dict[str, Any] = {"token": token}
            sent_last_event_id = self.last_event_id
            if sent_last_event_id is not None:
                first["last_event_id"] = sent_last_event_id
            await ws.send(json.dumps(first))
            connected = await self._receive_connected(ws)
            self._connected(connected, sent_last_event_id)
            tasks.append(asyncio.create_task(self._keepalive(ws)))
            if connected.get("expires_at"):
                tasks.append(asyncio.create_task(self._refresher(ws, connected["expires_at"])))
            while True:
                message = await self._receive(ws)
                kind = message.get("type")
                if kind == "pong":
                    if self._pong is not None:
                        self._pong.set()
                elif kind == "token_expiring":
                    tasks.append(asyncio.create_task(self._refresh(ws)))
                elif kind == "token_refreshed":
                    for task in tasks[1:]:
                        task.cancel()
                    del tasks[1:]
                    if message.get("expires_at"):
                        tasks.append(
                            asyncio.create_task(self._refresher(ws, message["expires_at"]))
                        )
                elif isinstance(message.get("id"), int):
                    if self.last_event_id is not None and message["id"] <= self.last_event_id:
                        continue  # a duplicate across a resume
                    self.last_event_id = message["id"]
                    yield message
        finally:
            for task in tasks:
                task.cancel()
            self._ws = None
            # Abort rather than close: a dead peer would keep a polite close waiting.
            compat.abort_transport(ws)

    async def _receive_connected(self, ws: ClientConnection) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                while True:
                    message = await self._receive(ws)
                    if message.get("type") == "connected":
                        return message
        except TimeoutError:
            self._failed_upgrades += 1  # upgraded, then nothing: a proxy that eats frames
            raise _Reconnect(ABNORMAL_CLOSURE) from None
        except _Reconnect as exc:
            if exc.code == ABNORMAL_CLOSURE:
                self._failed_upgrades += 1
            raise

    # --- one event stream (PROTOCOL §5) -------------------------------------------------------

    async def _stream_session(self, token: str) -> AsyncIterator[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        if self._origin:
            headers["Origin"] = self._origin
        sent_last_event_id = self.last_event_id
        if sent_last_event_id is not None:
            headers["Last-Event-ID"] = str(sent_last_event_id)
        try:
            stream = await open_event_stream(
                self.stream_url, headers=headers, connect_timeout=self.connect_timeout
            )
        except (OSError, TimeoutError, StreamError) as exc:
            logger.info("notification stream did not open: %s", exc)
            # HTTP does not work either: the server is away, not the WebSocket blocked.
            self._failed_upgrades = FAILED_UPGRADES_BEFORE_FALLBACK - 1
            raise _Reconnect(ABNORMAL_CLOSURE) from None
        self._stream = stream
        tasks: list[asyncio.Task] = []
        try:
            if stream.status != 200:
                logger.info("notification stream refused: HTTP %d", stream.status)
                raise _Reconnect(REFUSAL_CODES.get(stream.status, ABNORMAL_CLOSURE))
            if self._closed.is_set():
                raise _Reconnect(CloseCode.NORMAL)
            tasks.append(asyncio.create_task(self._watch_stream(stream)))
            if self.transport_mode == "auto":
                tasks.append(asyncio.create_task(self._probe_websocket(stream)))
            async for message in _until_broken(stream):
                if message.event == "closed":
                    raise _Reconnect(_closed_code(message.data))
                try:
                    content = json.loads(message.data)
                except ValueError:
                    continue
                if not isinstance(content, dict):
                    continue
                if message.event == "connected":
                    self._connected(content, sent_last_event_id)
                elif message.event == "token_expiring":
                    # No in-band refresh over HTTP: resume at once on a new stream.
                    token = await self._fresh_token()
                    if token:
                        self._token = token
                        raise _Reconnect(CloseCode.NORMAL, at_once=True)
                elif isinstance(content.get("id"), int):
                    if self.last_event_id is not None and content["id"] <= self.last_event_id:
                        continue
                    self.last_event_id = content["id"]
                    yield content
            if self._failed_upgrades == 0 and self.transport_mode == "auto":
                raise _Reconnect(CloseCode.NORMAL, at_once=True)  # the WebSocket works again
            raise _Reconnect(ABNORMAL_CLOSURE)
        finally:
            for task in tasks:
                task.cancel()
            self._stream = None
            await stream.close()

    async def _watch_stream(self, stream: EventStreamResponse) -> None:
        # The server writes at least a `: ping` every 15 s: silence means a dead connection.
        while True:
            await asyncio.sleep(self.stream_idle_timeout / 3)
            if asyncio.get_running_loop().time() - stream.received_at > self.stream_idle_timeout:
                logger.info("no data in %.1f s: dropping the stream", self.stream_idle_timeout)
                stream.stop()
                return

    async def _probe_websocket(self, stream: EventStreamResponse) -> None:
        # On the fallback, try an upgrade now and then; once one succeeds, end the stream and
        # reconnect over the WebSocket (the stream's last id carries over).
        while True:
            await asyncio.sleep(self.websocket_retry_interval)
            headers = {"Origin": self._origin} if self._origin else None
            try:
                ws = await connect(
                    self.url, additional_headers=headers, open_timeout=self.connect_timeout
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI):
                continue
            compat.abort_transport(ws)
            logger.info("WebSocket upgrades work again: leaving the event stream")
            self._failed_upgrades = 0
            stream.stop()
            return

    async def _fresh_token(self) -> str | None:
        try:
            return await self._call_get_token()
        except Exception:
            logger.warning("token refresh failed", exc_info=True)
            return None

    async def _receive(self, ws: ClientConnection) -> dict[str, Any]:
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                raise _Reconnect(exc.rcvd.code if exc.rcvd else ABNORMAL_CLOSURE) from None
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict):
                return message

    def _connected(self, message: dict[str, Any], sent_last_event_id: int | None) -> None:
        recovered = message.get("recovered") is not False
        if sent_last_event_id is None or not recovered:
            # Nothing to replay, or events were lost: continue from the server's newest id.
            self.last_event_id = message.get("last_event_id", 0)
        self.attempt = 0
        if self.active_transport == "websocket":
            self._failed_upgrades = 0
        self.connection = message
        self._set_state("connected", recovered=recovered)
        if self._on_connected is not None:
            self._on_connected(message)

    # --- timers -------------------------------------------------------------------------------

    async def _keepalive(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            self._pong = asyncio.Event()
            await ws.send(json.dumps({"type": "ping"}))
            try:
                await asyncio.wait_for(self._pong.wait(), self.pong_timeout)
            except TimeoutError:
                logger.info("no pong in %.1f s: dropping the socket", self.pong_timeout)
                compat.abort_transport(ws)  # recv() then fails and events() reconnects
                return

    async def _refresher(self, ws: ClientConnection, expires_at: str) -> None:
        try:
            expiry = datetime.fromisoformat(expires_at).timestamp()
        except ValueError:
            return
        loop = asyncio.get_running_loop()
        wall_to_loop = loop.time() - time.time()
        self._expires_at = expiry + wall_to_loop
        await asyncio.sleep(max(0.0, self._expires_at - self.refresh_before - loop.time()))
        await self._refresh(ws)

    async def _refresh(self, ws: ClientConnection) -> None:
        try:
            token = await self._call_get_token()
        except Exception:
            # The server closes 4002 at expiry; events() then asks again and stops if it fails.
            logger.warning("token refresh failed", exc_info=True)
            return
        if token and self._ws is ws:
            self._token = token
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "refresh", "token": token}))

    async def _wait_before_retry(self, code: int) -> None:
        delay = backoff_delay(
            self.attempt, initial=self.backoff_initial, maximum=self.backoff_max, rand=self._rand
        )
        self.attempt += 1
        self._set_state("reconnecting", delay=delay, close_code=code)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), delay)

    # --- tokens and state ---------------------------------------------------------------------

    async def _usable_token(self, rejected: str | None) -> str:
        loop = asyncio.get_running_loop()
        expiring = (
            self._expires_at is not None and loop.time() >= self._expires_at - self.refresh_before
        )
        if self._token and not expiring:
            return self._token
        try:
            token = await self._call_get_token()
        except Exception as exc:
            raise AuthenticationFailed(f"the token callback failed: {exc}") from exc
        if not token or token == rejected:
            raise AuthenticationFailed("the token callback gave no new token")
        self._token, self._expires_at = token, None
        return token

    async def _call_get_token(self) -> str:
        token = self._get_token()
        if inspect.isawaitable(token):
            token = await token
        return token

    def _set_state(self, state: str, **details: Any) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(
                StateChange(
                    state=state, attempt=self.attempt, transport=self.active_transport, **details
                )
            )


async def _until_broken(stream: EventStreamResponse):
    """The stream's messages until it ends or breaks (a reset, a truncated chunk)."""
    with contextlib.suppress(OSError, EOFError, StreamError):
        async for message in stream.messages():
            yield message


def _closed_code(data: str) -> int:
    try:
        code = json.loads(data).get("code")
    except (ValueError, AttributeError):
        return ABNORMAL_CLOSURE
    return code if isinstance(code, int) else ABNORMAL_CLOSURE
