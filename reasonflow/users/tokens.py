"""Our simplejwt token classes: every claim's type is checked before anything reads it, and the
tokens carry the user's token version, so one logout revokes them all.

REST (AUTH_TOKEN_CLASSES), the WebSocket (through the same JWTAuthentication) and the refresh
and logout endpoints (the serializers' token_class) all build their tokens from these classes.
"""

import math
from collections.abc import Callable
from typing import Any

from rest_framework_simplejwt import tokens
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings

from reasonflow.users.models import User

VERSION_CLAIM = "ver"

# 9999-12-31T23:59:59Z: the largest Unix time a datetime can hold. PyJWT accepts any value
# int() takes ("9999999999", 1e300, true) and simplejwt then fails turning it into a datetime.
_MAX_EPOCH = 253_402_300_799


def _is_epoch(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= _MAX_EPOCH


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_version(value: Any) -> bool:
    return type(value) is int and value >= 0


def _claim_checks() -> dict[str, Callable[[Any], bool]]:
    # Built per call: the claim names come from SIMPLE_JWT, which tests may override.
    return {
        "exp": _is_epoch,
        "iat": _is_epoch,
        "nbf": _is_epoch,
        api_settings.JTI_CLAIM: _is_text,
        api_settings.TOKEN_TYPE_CLAIM: _is_text,
        api_settings.USER_ID_CLAIM: _is_text,
        api_settings.REVOKE_TOKEN_CLAIM: _is_text,
        VERSION_CLAIM: _is_version,
    }


class TypedClaimsMixin:
    """Refuse a signed token whose claims have the wrong type (TokenError, so 401 / 4002)
    before simplejwt's own checks, which raise TypeError or OverflowError on them."""

    payload: dict[str, Any]

    def verify(self) -> None:
        for claim, is_valid in _claim_checks().items():
            if claim in self.payload and not is_valid(self.payload[claim]):
                raise TokenError(f"Token has a malformed '{claim}' claim")
        super().verify()


class AccessToken(TypedClaimsMixin, tokens.AccessToken):
    pass


class RefreshToken(TypedClaimsMixin, tokens.RefreshToken):
    """A refresh token (and the access tokens made from it) stamped with `token_version`."""

    access_token_class = AccessToken

    @classmethod
    def for_user(cls, user: User) -> "RefreshToken":
        token = super().for_user(user)
        token[VERSION_CLAIM] = user.token_version
        return token


def token_version_is_current(token, user: User) -> bool:
    """Tokens minted before the user's last revocation carry an older version."""
    version = token.get(VERSION_CLAIM, 0)
    return type(version) is int and version == user.token_version
