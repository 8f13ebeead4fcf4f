"""What the consumer reports about sockets and events: metrics, the access
log (one line per open, close and auth failure) and presence updates, behind one-line hooks.

Everything here runs on the hot path: counters and dict lookups only, no I/O.
"""

import asyncio
import logging
import time

from notifications import compat
from notifications.operations import metrics
from notifications.realtime.connections import REFUSED_PROCESS, registry
from notifications.realtime.presence import tracker
from reasonflow.addresses import client_address

access_log = logging.getLogger("notifications.access")
logger = logging.getLogger(__name__)

# Kept on the consumer (opened_at, close_code): a map here cost memory for every open socket.


def socket_accepted(consumer) -> None:
    consumer.opened_at = time.monotonic()
    metrics.CONNECTIONS_ACCEPTED.labels(transport=consumer.transport_name).inc()
    metrics.OPEN_CONNECTIONS.labels(transport=consumer.transport_name).inc()


def socket_authenticated(consumer) -> None:
    metrics.AUTHENTICATED_USERS.set(len(registry.by_user))
    tracker.changed()
    access_log.info(
        "%s open user=%s",
        consumer.transport_name,
        consumer.user_id,
        extra={
            "event": "ws_open",
            "user_id": str(consumer.user_id),
            "transport": consumer.transport_name,
        },
    )


def socket_closing(consumer, code: int | None) -> None:
    """Record the close code: the first one seen (ours in close_with, else the client's)."""
    if consumer.opened_at is not None and consumer.close_code is None:
        consumer.close_code = code if code is None else int(code)  # CloseCode: logged as int


def socket_closed(consumer) -> None:
    """The socket is gone (called once, however it ended); sockets never accepted are ignored."""
    opened_at, code = consumer.opened_at, consumer.close_code
    if opened_at is None:
        return
    consumer.opened_at = None
    code = 1006 if code is None else code  # no close frame seen: abnormal closure
    duration = round(time.monotonic() - opened_at, 3)
    transport = consumer.transport_name
    metrics.OPEN_CONNECTIONS.labels(transport=transport).dec()
    metrics.CONNECTIONS_CLOSED.labels(
        transport=transport, code=metrics.close_code_label(code)
    ).inc()
    user_id = None if consumer.user_id is None else str(consumer.user_id)
    if user_id is not None:
        metrics.AUTHENTICATED_USERS.set(len(registry.by_user))
        tracker.changed()
    access_log.info(
        "%s close user=%s code=%s duration=%.3fs",
        transport,
        user_id,
        code,
        duration,
        extra={
            "event": "ws_close",
            "user_id": user_id,
            "close_code": code,
            "duration_s": duration,
            "transport": transport,
        },
    )


# A client hammering at a limit must not turn each refusal into a log line: at most one line a
# second per reason, saying how many refusals it stands for (the metric counts every one).
REFUSAL_LOG_INTERVAL = 1.0
_refusals_logged_at: dict[str, float] = {}
_refusals_unlogged: dict[str, int] = {}


def socket_refused(reason: str, scope: dict, transport_name: str = "websocket") -> None:
    """An upgrade was refused before accept; `reason` is one of connections.REFUSED_*."""
    metrics.CONNECTIONS_REFUSED.labels(reason=reason).inc()
    if reason == REFUSED_PROCESS:
        logger.warning("refused a socket: %d unauthenticated already", len(registry.pending))
    now = time.monotonic()
    count = _refusals_unlogged.get(reason, 0) + 1
    logged_at = _refusals_logged_at.get(reason)
    if logged_at is not None and now - logged_at < REFUSAL_LOG_INTERVAL:
        _refusals_unlogged[reason] = count
        return
    _refusals_logged_at[reason], _refusals_unlogged[reason] = now, 0
    address = client_address(scope)
    access_log.info(
        "%s refused reason=%s client=%s count=%d",
        transport_name,
        reason,
        address,
        count,
        extra={"event": "ws_refused", "reason": reason, "client": address, "count": count},
    )


def auth_failed(reason: str, transport_name: str = "websocket") -> None:
    """A socket failed authentication; `reason` is a code literal, never token material."""
    label = metrics.reason_label(reason)
    metrics.AUTH_FAILURES.labels(reason=label).inc()
    access_log.info(
        "%s auth failed reason=%s",
        transport_name,
        label,
        extra={"event": "ws_auth_failed", "reason": label, "transport": transport_name},
    )


# Deliveries waiting to be counted: a fan-out writes one event to thousands of sockets in one
# callback, and a Counter.inc and a Histogram.observe per socket (a lock each) were about
# 1.2 µs of a delivery's 16. Each entry is the delivery's latency, or None when unknown.
_delivered: list[float | None] = []


def event_delivered(message: dict) -> None:
    """Count a live delivery and observe its latency: when the event loop next turns (the
    whole fan-out at once), or at once outside an event loop."""
    published_at = message.get("published_at")
    _delivered.append(None if published_at is None else max(0.0, time.time() - published_at))
    if len(_delivered) == 1:
        try:
            asyncio.get_running_loop().call_soon(record_deliveries)
        except RuntimeError:  # no running loop (a command, a test): nothing to batch
            record_deliveries()


def record_deliveries() -> None:
    delivered = _delivered[:]
    del _delivered[: len(delivered)]
    metrics.EVENTS_DELIVERED.inc(len(delivered))
    compat.observe_each(
        metrics.DELIVERY_LATENCY, [latency for latency in delivered if latency is not None]
    )


def replayed(count: int) -> None:
    metrics.REPLAYS.inc()
    metrics.REPLAYED_EVENTS.inc(max(0, count))


def gap_filled() -> None:
    metrics.GAP_FILLS.inc()
