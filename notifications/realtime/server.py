"""The production ASGI server: uvicorn, configured for many idle sockets, closing them with
4012 (the contract's "restarting, resume") on SIGTERM instead of dropping them."""

import asyncio
import gc
import logging
import socket

import uvicorn
from django.conf import settings
from django.core.signals import request_finished
from django.db import connections
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from notifications import compat
from notifications.close_codes import CloseCode
from notifications.realtime.connections import registry
from notifications.realtime.open_files import raise_open_file_limit
from notifications.realtime.presence import tracker as presence

logger = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 20, 100)  # CPython's defaults: (700, 10, 10)


class NotifyServer(uvicorn.Server):
    """uvicorn.Server whose shutdown first closes every socket with 4012 and waits for their
    group memberships to be discarded, so nothing lingers in Redis after a deploy."""

    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()  # no new sockets while the old ones are told to go
        open_sockets = len(registry.all())
        try:
            async with asyncio.timeout(settings.NOTIFICATIONS_SHUTDOWN_GRACE):
                await registry.close_all(CloseCode.RESTARTING)
        except TimeoutError:
            logger.warning("%d socket(s) still open after the grace period", len(registry.all()))
        logger.info(
            "closed %d socket(s) with %d before shutdown", open_sockets, CloseCode.RESTARTING
        )
        await presence.stop()  # this process's counts leave now, not at their expiry
        await super().shutdown(sockets)


def server_config(*, host: str, port: int, **overrides) -> uvicorn.Config:
    """How this project runs uvicorn (also used by the live-server tests and the benchmark)."""
    options = {
        "host": host,
        "port": port,
        "http": compat.lean_http_protocol(HttpToolsProtocol),
        # The sans-I/O websockets protocol waits for the client to drain before the next send,
        # which is what lets a consumer notice a slow reader (4010) instead of buffering.
        "ws": compat.lean_websocket_protocol(WebSocketsSansIOProtocol),
        # Above the protocol's 64 KiB so the consumer can answer 4009; beyond it the server
        # drops the frame itself (1009) before buffering it whole.
        "ws_max_size": 8 * settings.NOTIFICATIONS_MAX_FRAME_BYTES,
        # Compression doubles memory per socket; events are small.
        "ws_per_message_deflate": False,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        # The default listen backlog (100, daphne's 50) stalled reconnect rushes for ~1 s.
        "backlog": 2048,
        "lifespan": "off",
        "timeout_graceful_shutdown": settings.NOTIFICATIONS_SHUTDOWN_GRACE + 5,
        "log_level": "warning",
        "access_log": False,
        # X-Forwarded-For/-Proto count only from the proxies listed in FORWARDED_ALLOW_IPS
        # (uvicorn takes the right-most address that is not one of them); with none listed
        # the headers are ignored, so no client can choose the address its limits count on.
        "proxy_headers": bool(settings.FORWARDED_ALLOW_IPS),
        "forwarded_allow_ips": settings.FORWARDED_ALLOW_IPS,
    }
    options.update(overrides)
    return uvicorn.Config("reasonflow.asgi:application", **options)


class PortUnavailable(Exception):
    pass


def listening_socket(*, host: str, port: int) -> socket.socket:
    """Bind the server's address now, so that a taken port fails before anything is printed;
    serve() then accepts on this socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def tune_garbage_collector() -> None:
    """Freeze what is loaded so far and make young collections rarer.

    A full collection walked every object of Django and the app while sockets waited: the
    slowest of 50 fan-outs to 500 sockets took 122-138 ms, 41-58 ms with the start-up objects
    frozen (never collected) and young collections made rarer (docs/performance.md). The
    benchmark's stock server calls this too, so the comparison is of consumers, not of GC.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(*, host: str, port: int, sock: socket.socket | None = None, **overrides) -> None:
    """Run the server until SIGINT/SIGTERM, on `sock` when given (see listening_socket)."""
    config = server_config(host=host, port=port, **overrides)
    config.load()  # import the application now, so that its objects are frozen below
    tune_garbage_collector()
    logger.info("open-file limit %d: each socket takes one", raise_open_file_limit())
    request_finished.connect(close_request_connections)
    NotifyServer(config).run(sockets=None if sock is None else [sock])


def close_request_connections(**kwargs) -> None:
    """Close the database connections of the thread that served a request.

    Under ASGI, Django runs each request's sync code in a thread of its own that ends with the
    request: a persistent connection there was closed only when the garbage collector found
    it, and with rarer collections PostgreSQL ran out of connections under REST load. With the
    connection pool (DATABASE_POOL) closing is what returns the connection to the pool; one
    left in an ended thread would never come back, and the pool would shrink to nothing.
    """
    for connection in connections.all(initialized_only=True):
        connection.close()
