"""NotificationClient: the Python side of the wire protocol (PROTOCOL §1-§3) for services and
scripts. One socket at a time; resumes with `last_event_id`, backs off with full jitter, asks a
token callback after 4001/4002, pings, and refreshes the token in-band before it expires.

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
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from notifications import compat
from notifications.close_codes import AUTH_CLOSE_CODES, CloseCode

logger = logging.getLogger(__name__)

TokenCallback = Callable[[], str | Awaitable[str]]

# A socket that stopped answering (no pong, no `connected`) is dropped and counts as 1006.
ABNORMAL_CLOSURE = 1006


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
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class NotificationClient:
    """A self-healing subscription to one user's events.

    `get_token` returns an access token (sync or async); it is called for the first token, after
    a 4001/4002 close, and before the token expires. `token` may give the first token instead.
    `on_state(StateChange)` and `on_connected(dict)` are called synchronously on transitions.
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
    ) -> None:
        self.url = url
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
            self._set_state("connecting", close_code=auth_code)
            rejected = auth_code = None
            self.connection = None
            try:
                async with contextlib.aclosing(self._session(token)) as session:
                    async for event in session:
                        yield event
                code = ABNORMAL_CLOSURE
            except _Reconnect as exc:
                code = exc.code
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
            await self._wait_before_retry(code)
        self._set_state("closed")

    async def close(self) -> None:
        """Close the socket with 1000 and end events()."""
        self._closed.set()
        ws = self._ws
        if ws is not None:
            await ws.close(CloseCode.NORMAL, "client closed")

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
            raise _Reconnect(ABNORMAL_CLOSURE) from None

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
            self._on_state(StateChange(state=state, attempt=self.attempt, **details))
