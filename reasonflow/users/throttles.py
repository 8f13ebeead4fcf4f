"""Rate limits of the auth endpoints: DRF throttles counting in Django's cache (Redis when
REDIS_URL or Sentinel is set, so every server process shares the counts).

Rates come from the THROTTLE_RATE_* settings, read on every request. Login and password
change count failed attempts only, and refuse (429) before the password is hashed.
"""

import hashlib
import ipaddress
import logging

import redis
from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


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

    def get_ident(self, request) -> str:
        ident = super().get_ident(request)
        try:
            address = ipaddress.ip_address(ident)
        except ValueError:
            return ident
        if address.version == 6 and address.ipv4_mapped is None:
            # One IPv6 client usually holds a whole /64: per address it could pick a fresh one
            # for every attempt.
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(getattr(address, "ipv4_mapped", None) or address)

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
        self.now = self.timer()
        self.history = [t for t in self.read_history(self.key) if t > self.now - self.duration]
        if len(self.history) >= self.num_requests:
            return self.throttle_failure()
        return self.throttle_success()

    def throttle_success(self) -> bool:
        self.history.insert(0, self.now)
        self.store_history(self.key, self.history)
        return True

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

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


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

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class RefreshThrottle(SettingsRateThrottle):
    """Refresh attempts per client address."""

    scope = "refresh"
    rate_setting = "THROTTLE_RATE_REFRESH"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
