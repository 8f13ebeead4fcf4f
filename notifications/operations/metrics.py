"""Prometheus metrics of the notification service, and their exposition for GET /metrics.

With PROMETHEUS_MULTIPROC_DIR set (before start-up, one empty directory shared by every worker
process of a host), prometheus-client keeps values in per-process files and /metrics sums them.
"""

import atexit
import glob
import ipaddress
import os
import re
import secrets

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from notifications.close_codes import CloseCode

OPEN_CONNECTIONS = Gauge(
    "notify_open_connections",
    "Connections open now (authenticated or not), by transport (websocket, sse).",
    ["transport"],
    multiprocess_mode="livesum",
)
AUTHENTICATED_USERS = Gauge(
    "notify_authenticated_users",
    "Users with at least one authenticated socket, summed over server processes.",
    multiprocess_mode="livesum",
)
CONNECTIONS_ACCEPTED = Counter(
    "notify_connections_accepted",
    "Connections accepted (upgrade completed, or event stream started), by transport.",
    ["transport"],
)
CONNECTIONS_CLOSED = Counter(
    "notify_connections_closed",
    "Connections closed, by transport and close code (codes outside the contract's: other).",
    ["transport", "code"],
)
CONNECTIONS_REFUSED = Counter(
    "notify_connections_refused",
    "WebSocket upgrades refused with 403 before accept, by limit (address_rate, "
    "address_pending, process_pending).",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "notify_auth_failures", "WebSocket authentication failures, by reason.", ["reason"]
)
EVENTS_PUBLISHED = Counter(
    "notify_events_published", "Events stored and committed, by event type.", ["type"]
)
EVENTS_DELIVERED = Counter(
    "notify_events_delivered", "Live events written to a socket (replays are counted apart)."
)
REPLAYS = Counter("notify_replays", "Reconnects that resumed from last_event_id.")
REPLAYED_EVENTS = Counter("notify_replayed_events", "Events sent by resumes from the store.")
GAP_FILLS = Counter(
    "notify_gap_fills", "Times a socket filled a gap left by the channel layer from the store."
)
DELIVERY_LATENCY = Histogram(
    "notify_delivery_latency_seconds",
    "From publish_event() to the frame written to the socket (live deliveries).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHANNEL_LAYER_SEND_FAILURES = Counter(
    "notify_channel_layer_send_failures", "group_send calls that failed (events kept for replay)."
)

_LABEL = re.compile(r"[^a-z0-9]+")

# Label values never come from a client: a close code is one of these, else "other".
# PROTOCOL §1's codes (close_codes.CloseCode), and the standard ones (RFC 6455 §7.4.1,
# 1000-1015) that a browser, a proxy or the server's own protocol layer may close with (1006:
# no close frame at all).
CONTRACT_CLOSE_CODES = frozenset(int(code) for code in CloseCode)
STANDARD_CLOSE_CODES = frozenset(range(1000, 1016))
_CLOSE_CODE_LABELS = {code: str(code) for code in CONTRACT_CLOSE_CODES | STANDARD_CLOSE_CODES}
OTHER = "other"
_CODE_TYPES = (int, CloseCode)  # not bool, nor any other int subclass a client could send
# Auth failure reasons are code literals of ours and simplejwt's (about fifteen); should a
# new one ever carry something variable, the distinct values still stop here.
MAX_REASON_LABELS = 32
_reason_labels: set[str] = set()


def close_code_label(code: object) -> str:
    """The label value of a close code: itself when the contract or RFC 6455 names it."""
    return _CLOSE_CODE_LABELS.get(code, OTHER) if type(code) in _CODE_TYPES else OTHER


def reason_label(reason: str) -> str:
    """A bounded, log- and label-safe slug of an auth failure reason: at most 48 characters,
    at most MAX_REASON_LABELS distinct values per process (then "other")."""
    label = _LABEL.sub("_", reason.lower()).strip("_")[:48] or "unknown"
    if label not in _reason_labels:
        if len(_reason_labels) >= MAX_REASON_LABELS:
            return OTHER
        _reason_labels.add(label)
    return label


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _forget_dead_processes(path: str) -> None:
    # Live gauges of a process that died without mark_process_dead (SIGKILL, OOM) would count
    # its sockets forever; the directory is per host, so a pid check is enough.
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = name.rsplit("_", 1)[-1].removesuffix(".db")
        if pid.isdigit() and not _pid_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render_metrics() -> tuple[bytes, str]:
    """The exposition body and its content type, summed over processes in multi-process mode."""
    path = _multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _forget_dead_processes(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_access_allowed(*, remote_addr: str | None, authorization: str | None) -> bool:
    """True for a request with METRICS_TOKEN as its Bearer token, or from METRICS_ALLOWED_IPS."""
    token = settings.METRICS_TOKEN
    if token and authorization:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return True
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.METRICS_ALLOWED_IPS
    )


def mark_this_process_dead() -> None:
    """Drop this process's live gauges from the shared directory (at a clean exit)."""
    path = _multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)


atexit.register(mark_this_process_dead)
