"""Rate limits of the auth endpoints: DRF throttles counting in Django's cache (Redis when
REDIS_URL or Sentinel is set, so every server process shares the counts).

Rates come from the THROTTLE_RATE_* settings, read on every request. Login and password
change count failed attempts only, and refuse (429) before the password is hashed.
"""

import asyncio
import functools
import hashlib
import json
import logging
import math
import threading
import time

import redis
from django.conf import settings
from django.urls import Resolver404, resolve
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled
from rest_framework.throttling import SimpleRateThrottle

from reasonflow.addresses import address_ident, client_address

logger = logging.getLogger(__name__)

# Held for a cache read and write (a millisecond), never for the work a throttle guards.
_counting = threading.Lock()


class ThrottleUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is temporarily unavailable, try again later."
    default_code = "throttle_unavailable"


class SettingsRateThrottle(SimpleRateThrottle):
    """SimpleRateThrottle with its rate read from the setting `rate_setting` on every request:
    DRF binds THROTTLE_RATES at import, where override_settings and test rigs cannot reach it.

    Also: the client address is REMOTE_ADDR (NUM_PROXIES = 0: the server put the real client
    there, from trusted proxies only), IPv6 clients count per /64, a cache outage is a 503.
    """

    rate_setting: str

    def get_rate(self) -> str | None:
        return getattr(settings, self.rate_setting)

    # True for throttles keyed by the client address alone: their refusals are remembered
    # by this process so that ThrottleGate can repeat them before the request reaches Django.
    by_address = False

    def get_ident(self, request) -> str:
        return address_ident(super().get_ident(request))

    def read_history(self, key: str) -> list[float]:
        """The times counted under `key`, newest first."""
        try:
            return self.cache.get(key, [])
        except (redis.RedisError, OSError) as exc:
            logger.warning("throttle cache unavailable: %s", exc)
            raise ThrottleUnavailable() from None

    def store_history(self, key: str, history: list[float]) -> None:
        # Only the newest num_requests times decide, so the list stays bounded.
        try:
            self.cache.set(key, history[: self.num_requests], self.duration)
        except (redis.RedisError, OSError) as exc:
            logger.warning("throttle cache unavailable: %s", exc)
            raise ThrottleUnavailable() from None

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        # Read, decide and write back as one step in this process: 16 concurrent attempts
        # from one client otherwise all read the same count and all pass. Across processes
        # the overshoot is at most one attempt per process.
        with _counting:
            self.now = self.timer()
            self.history = [t for t in self.read_history(self.key) if t > self.now - self.duration]
            if len(self.history) >= self.num_requests:
                if self.by_address:
                    refusals.remember(self.scope, self.get_ident(request), self.now + self.wait())
                return self.throttle_failure()
            return self.throttle_success()

    def throttle_success(self) -> bool:
        self.history.insert(0, self.now)
        self.store_history(self.key, self.history)
        return True

    def get_cache_key(self, request, view) -> str | None:
        """Keyed by the client address (subclasses with another key override this)."""
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def wait(self) -> float | None:
        # Exactly until the count drops below the rate. DRF's estimate gives None (so no
        # Retry-After) once concurrent requests pushed the count over the rate.
        if len(self.history) < self.num_requests:
            return None
        return self.history[self.num_requests - 1] + self.duration - self.now


class FailureRateThrottle(SettingsRateThrottle):
    """Counts failed attempts only (see FailureThrottledMixin): an attempt it lets through is
    counted at once, so that concurrent attempts see it while its costly check (a password
    hash) runs, and forgiven afterwards unless it failed."""

    counted = False

    def throttle_success(self) -> bool:
        self.counted = True
        return super().throttle_success()

    def forgive(self) -> None:
        """Uncount the attempt this throttle let through (a no-op if it counted none)."""
        if not self.counted:
            return
        self.counted = False
        try:
            with _counting:
                history = self.read_history(self.key)
                if self.now in history:
                    history.remove(self.now)
                    self.store_history(self.key, history)
        except ThrottleUnavailable:
            pass  # counted, then: errs on the strict side


class FailureThrottledMixin:
    """For an APIView whose throttles are FailureRateThrottles: the attempts they let through
    are forgiven when the response is final, unless the view called attempt_failed()."""

    _attempt_failed = False

    def get_throttles(self):
        # The instances that counted this attempt are the ones that can forgive it.
        if not hasattr(self, "_throttle_instances"):
            self._throttle_instances = super().get_throttles()
        return self._throttle_instances

    def attempt_failed(self) -> None:
        """Keep this attempt counted: it failed the check the throttles guard."""
        self._attempt_failed = True

    def finalize_response(self, request, response, *args, **kwargs):
        if not self._attempt_failed:
            for throttle in self.get_throttles():
                throttle.forgive()
        return super().finalize_response(request, response, *args, **kwargs)


class LoginAccountThrottle(FailureRateThrottle):
    """Failed logins per account, named by the email as the login looks it up (any case)."""

    scope = "login_account"
    rate_setting = "THROTTLE_RATE_LOGIN"

    def get_cache_key(self, request, view) -> str | None:
        data = request.data
        email = data.get("email") if hasattr(data, "get") else None
        if not isinstance(email, str):
            return None  # no password is checked without an email string: nothing to count
        # Hashed: any string a client sends makes a short key of safe characters.
        ident = hashlib.sha256(email.lower().encode(errors="surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginAddressThrottle(FailureRateThrottle):
    """Failed logins per client address, whatever the accounts tried."""

    scope = "login_address"
    rate_setting = "THROTTLE_RATE_LOGIN"

    by_address = True


class PasswordChangeThrottle(FailureRateThrottle):
    """Wrong current passwords per user."""

    scope = "password"
    rate_setting = "THROTTLE_RATE_PASSWORD"

    def get_cache_key(self, request, view) -> str | None:
        user = request.user
        if user is None or not user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class RegisterThrottle(SettingsRateThrottle):
    """Registration attempts per client address."""

    scope = "register"
    rate_setting = "THROTTLE_RATE_REGISTER"

    by_address = True


class RefreshThrottle(SettingsRateThrottle):
    """Refresh attempts per client address."""

    scope = "refresh"
    rate_setting = "THROTTLE_RATE_REFRESH"

    by_address = True


class Refusals:
    """The (scope, client address) pairs an address throttle refused, each until the moment
    its count drops below the rate again. Only a memo of DRF's own decisions: the counts stay
    in the shared cache. Bounded: past `limit` entries the oldest are forgotten."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._until: dict[tuple[str, str], float] = {}

    def remember(self, scope: str, ident: str, until: float) -> None:
        key = (scope, ident)
        self._until.pop(key, None)  # re-inserted last, so the oldest stay first
        self._until[key] = until
        while len(self._until) > self.limit:
            del self._until[next(iter(self._until))]

    def wait(self, scope: str, ident: str, now: float) -> float | None:
        """Seconds until `ident` may try `scope` again, or None when it is not refused."""
        until = self._until.get((scope, ident))
        if until is None:
            return None
        if until <= now:
            del self._until[(scope, ident)]
            return None
        return until - now

    def __bool__(self) -> bool:
        return bool(self._until)

    def clear(self) -> None:
        self._until.clear()


refusals = Refusals()


@functools.lru_cache(maxsize=1024)
def _address_scopes(path: str) -> tuple[str, ...]:
    try:
        match = resolve(path)
    except Resolver404:
        return ()
    view_class = getattr(match.func, "view_class", None)
    throttles = getattr(view_class, "throttle_classes", ())
    return tuple(t.scope for t in throttles if getattr(t, "by_address", False))


class ThrottleGate:
    """ASGI middleware for HTTP: a client address that an address throttle refused gets the
    same 429 and Retry-After here, until that refusal ends, without a thread, a cache read or
    Django (docs/guarantees.md: the login storm).

    The answer waits `delay` seconds first, as nginx's limit_req delays excess requests: a
    client that ignores Retry-After then holds a sleeping task instead of keeping the event
    loop busy answering it, which every other request and socket of the process would feel.
    At most `max_delayed` answers wait at once; past that they go at once.
    """

    def __init__(self, application, *, delay: float = 0.5, max_delayed: int = 1000) -> None:
        self.application = application
        self.delay = delay
        self.max_delayed = max_delayed
        self.delayed = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and refusals and scope.get("client"):
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            for name in _address_scopes(path):
                wait = refusals.wait(name, client_address(scope), time.time())
                if wait is not None:
                    await self._tarpit()
                    return await _send_throttled(send, max(0.0, wait - self.delay))
        return await self.application(scope, receive, send)

    async def _tarpit(self) -> None:
        if self.delayed >= self.max_delayed:
            return
        self.delayed += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.delayed -= 1


async def _send_throttled(send, wait: float) -> None:
    status, headers, body = _throttled_response(math.ceil(wait))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@functools.lru_cache(maxsize=128)
def _throttled_response(wait: int) -> tuple[int, list, bytes]:
    # DRF's own 429 (message, Retry-After), built once per number of seconds: translating the
    # message was a fifth of a refused request's cost.
    exc = Throttled(wait)
    body = json.dumps({"detail": str(exc.detail)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % exc.wait),
    ]
    return exc.status_code, headers, body
