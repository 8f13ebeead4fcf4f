"""Origin check for the WebSocket upgrade (PROTOCOL §1): refuse foreign browser origins with
HTTP 403 before any frame; a request without Origin (a non-browser client) is allowed."""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def origin_allowed(origin: bytes | None) -> bool:
    """True when `origin` (the raw header) may open a socket."""
    if origin is None:
        return True
    try:
        text = origin.decode("ascii")
    except UnicodeDecodeError:
        return False  # a homoglyph or other non-ASCII host is never one of ours
    if text in settings.NOTIFICATIONS_ALLOWED_ORIGINS:
        return True
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    if parts.path or parts.query or parts.fragment:
        return False
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    domain, _ = split_domain_port(host if port is None else f"{host}:{port}")
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


class OriginValidator:
    """ASGI middleware: deny WebSocket connections whose Origin is not allowed."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            origins = [value for name, value in scope.get("headers", []) if name == b"origin"]
            if len(origins) > 1 or not origin_allowed(origins[0] if origins else None):
                return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
