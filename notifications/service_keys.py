"""How the publish API knows its caller: a service key in `Authorization: Bearer rfk_...`
(never a user's JWT), and each key's request rate."""

import logging
import time

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework import authentication, exceptions, permissions
from rest_framework.throttling import BaseThrottle

from notifications import selectors
from notifications.models import ServiceKey
from notifications.services import service_key_mark_used
from reasonflow.users.throttles import ThrottleUnavailable

logger = logging.getLogger(__name__)


class ServiceKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <service key>`: request.auth becomes the ServiceKey and
    request.user stays None. Unknown and revoked keys, and anything else in the header (a
    user's access token included), are a 401; the key is read on every request, so a
    revocation holds from the next one."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header:
            return None
        if len(header) != 2 or header[0].decode(errors="replace") != self.keyword:
            raise exceptions.AuthenticationFailed("Send Authorization: Bearer <service key>.")
        secret = header[1].decode(errors="replace")
        key = selectors.service_key_get_by_secret(secret=secret)
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown service key.")
        if not key.is_active:
            raise exceptions.AuthenticationFailed("This service key has been revoked.")
        service_key_mark_used(key=key)
        return None, key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="service key"'


class HasServiceKey(permissions.BasePermission):
    """Only a request authenticated by ServiceKeyAuthentication (a 401 otherwise)."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ServiceKey)


class ServiceKeyRateThrottle(BaseThrottle):
    """NOTIFICATIONS_PUBLISH_RATE requests per key, counted in fixed windows in the shared
    cache: two cache operations per request, whatever the rate (a sliding log of timestamps,
    as the auth throttles keep, grows with it). A window's edge may let through up to twice
    the rate over one window's length."""

    def allow_request(self, request, view) -> bool:
        rate = settings.NOTIFICATIONS_PUBLISH_RATE
        count, period = rate.split("/")
        duration = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
        now = time.time()
        window = int(now // duration)
        name = f"publish-rate:{request.auth.pk}:{window}"
        try:
            cache.add(name, 0, timeout=duration * 2)
            try:
                used = cache.incr(name)
            except ValueError:  # expired between the two calls
                cache.add(name, 1, timeout=duration * 2)
                used = 1
        except (redis.RedisError, OSError) as exc:
            logger.warning("publish rate cache unavailable: %s", exc)
            raise ThrottleUnavailable() from None
        self.retry_at = (window + 1) * duration
        self.now = now
        return used <= int(count)

    def wait(self) -> float:
        return self.retry_at - self.now
