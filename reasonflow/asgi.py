"""ASGI entry point: HTTP goes to Django past the throttle gate and a request-body limit, on
long-lived threads (the event stream, PROTOCOL §5, to its consumer past the gate), WebSocket
to the notification consumer past the origin check."""

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")
django_asgi_app = get_asgi_application()

from notifications import compat  # noqa: E402

# Django's signals, middleware, view and response close in one thread hop per request.
compat.respond_in_one_hop(django_asgi_app)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from notifications.realtime.origins import OriginValidator  # noqa: E402
from notifications.realtime.routing import (  # noqa: E402
    event_stream_urlpatterns,
    websocket_urlpatterns,
)
from reasonflow.api import body_too_large_detail  # noqa: E402
from reasonflow.users.throttles import ThrottleGate  # noqa: E402

if settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer":
    logging.getLogger("reasonflow").warning(
        "REDIS_URL is not set: using the in-memory channel layer. Events published by other "
        "processes (workers, management commands) reach this server's sockets through its "
        "delivery watch, %s to %s s later, not at once; set REDIS_URL for immediate delivery.",
        settings.NOTIFICATIONS_CATCHUP_INTERVAL,
        2 * settings.NOTIFICATIONS_CATCHUP_INTERVAL,
    )


class RequestThreads:
    """Run each HTTP request's sync code (Django's middleware and view, its request_started
    and request_finished signals) on a long-lived thread, one request at a time on each.

    Django's ASGIHandler gives every request a thread of its own (asgiref's
    ThreadSensitiveContext), and asgiref starts one more to join it when the request ends:
    two threads started and joined per request. Django's per-request state is in context
    variables, not in the thread (its database connection goes back to the pool at the end of
    each request), so a thread serves the next request as a WSGI server's threads do. Up to
    `keep` idle threads wait for the next request (the database pool's size: no more requests
    than that can use the database at once); more run while more requests are in flight.
    """

    def __init__(self, app, keep: int) -> None:
        self.app = app
        self.keep = keep
        self.idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send):
        thread = self.idle.pop() if self.idle else ThreadPoolExecutor(1, "request")
        try:
            # Django's own ThreadSensitiveContext, inside this one, changes nothing.
            async with ThreadSensitiveContext(executor=thread):
                result = await self.app(scope, receive, send)
        except BaseException:
            # A cancelled request's sync code may still run there: the thread ends after it,
            # instead of holding the next request up.
            thread.shutdown(wait=False)
            raise
        if len(self.idle) < self.keep:
            self.idle.append(thread)
        else:
            thread.shutdown(wait=False)
        return result


class BodyLimit:
    """Answer 413 to an HTTP request whose body exceeds MAX_REQUEST_BODY_BYTES, before it is
    read whole.

    Django's ASGIHandler reads every body to its end (into a temporary file, spilling to disk)
    before any view can refuse it, and HttpRequest.body enforces DATA_UPLOAD_MAX_MEMORY_SIZE
    only afterwards. Here a declared Content-Length over the limit is refused unread, and a
    chunked body as soon as its bytes pass the limit. A body within it is handed on as one
    message, with its Content-Length stated when the client sent it chunked (Django REST
    framework reads no body without one).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.MAX_REQUEST_BODY_BYTES
        lengths = [value for name, value in scope["headers"] if name == b"content-length"]
        if any(value.strip().isdigit() and int(value) > limit for value in lengths):
            return await self.refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client is gone; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self.refuse(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and not lengths:
            scope = {**scope, "headers": [*scope["headers"], (b"content-length", b"%d" % size)]}
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # Django waits here for the client's disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def refuse(send) -> None:
        # uvicorn discards the unread rest of the body; the connection stays usable.
        content = json.dumps({"detail": body_too_large_detail()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(content)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


django_http = BodyLimit(RequestThreads(django_asgi_app, keep=settings.DATABASE_POOL_MAX_SIZE))

application = ProtocolTypeRouter(
    {
        # The gate first: a refused client costs no body read.
        "http": ThrottleGate(URLRouter([*event_stream_urlpatterns, re_path(r"", django_http)])),
        "websocket": OriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
