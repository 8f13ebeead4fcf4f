"""Client addresses as the per-client limits count them: the REST throttles
(users/throttles.py) and socket admission (notifications/realtime/connections.py) share one
notion of "the same client"."""

import logging
import socket

from django.conf import settings

logger = logging.getLogger(__name__)

_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def address_ident(host: str) -> str:
    """What a client address counts as: IPv4 as it is, IPv4-mapped IPv6 as its IPv4, other
    IPv6 as its /64 (one host usually owns a whole /64 and could pick a fresh address for every
    attempt), anything else (a proxy's non-address value) cut to 64 characters."""
    if ":" not in host:
        return host[:64]
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return host[:64]
    if packed[:12] == _IPV4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    # socket, not ipaddress: a tenth of the cost on every connect of an IPv6 client.
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


def client_address(scope: dict) -> str | None:
    """address_ident() of an ASGI connection's client: the peer, or X-Forwarded-For's address
    when the server (uvicorn) applied it because the peer is listed in FORWARDED_ALLOW_IPS.
    None without a peer address (in-process tests, unix sockets)."""
    client = scope.get("client")
    if not client or not client[0]:
        return None
    host = client[0]
    if not _forwarding_checked:
        _check_forwarding(scope, host)
    return address_ident(host)


_forwarding_checked = False


def _check_forwarding(scope: dict, host: str) -> None:
    # An X-Forwarded-For that uvicorn did not apply came from a peer FORWARDED_ALLOW_IPS does
    # not list: harmless from a client, but from our own proxy it means every client behind
    # it shares the proxy's address (and its limits). Said once per process.
    global _forwarding_checked
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            _forwarding_checked = True
            if host not in value.decode("latin-1"):
                logger.warning(
                    "ignored X-Forwarded-For from %s: it is not in FORWARDED_ALLOW_IPS (%r). "
                    "If it is your proxy, list it there, else all clients behind it share "
                    "one address's limits.",
                    host,
                    settings.FORWARDED_ALLOW_IPS,
                )
            return
