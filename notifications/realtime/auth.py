"""Access token -> user, through simplejwt's own authentication class.

REST and the WebSocket share one policy (reasonflow.users.authentication): token type,
signature, algorithm, expiry, active user, password change and logout revocation.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from reasonflow.users.authentication import JWTAuthentication

User = get_user_model()


class TokenRejected(Exception):
    """The token is not usable: close 4002. `reason` is safe to log, never sent to clients."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AuthenticatedToken:
    user: User
    expires_at: datetime


_authentication = JWTAuthentication()


def validate_access_token(raw_token: str) -> tuple[Token, uuid.UUID]:
    """Check an access token's signature, type and expiry (no database) and return it with
    the user id it claims, or raise TokenRejected.

    The caller must have checked that `raw_token` is a non-empty string: simplejwt's
    AccessToken(None) mints a fresh token instead of failing.
    """
    if not isinstance(raw_token, str) or not raw_token:
        raise TypeError("raw_token must be a non-empty string")
    try:
        validated = _authentication.get_validated_token(raw_token.encode())
    except (InvalidToken, TokenError, AuthenticationFailed) as exc:
        raise TokenRejected(_reason(exc)) from None
    try:
        return validated, uuid.UUID(str(validated.payload.get(api_settings.USER_ID_CLAIM)))
    except ValueError:
        raise TokenRejected("invalid_user_id") from None


def authenticate_validated_token(validated: Token) -> AuthenticatedToken:
    """The active user of a validated token, or TokenRejected (revoked, inactive, unknown).
    Database errors propagate."""
    try:
        user = _authentication.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed) as exc:
        raise TokenRejected(_reason(exc)) from None
    return _authenticated(validated, user)


def authenticate_loaded_user(validated: Token, user: User | None) -> AuthenticatedToken:
    """authenticate_validated_token() for a caller that has read the token's user itself
    (None: no such user): the same checks, no query."""
    if user is None:
        raise TokenRejected("user_not_found")
    try:
        _authentication.check_user(validated, user)
    except AuthenticationFailed as exc:
        raise TokenRejected(_reason(exc)) from None
    return _authenticated(validated, user)


def _authenticated(validated: Token, user: User) -> AuthenticatedToken:
    return AuthenticatedToken(
        user=user, expires_at=datetime.fromtimestamp(validated["exp"], tz=UTC)
    )


def authenticate_access_token(raw_token: str) -> AuthenticatedToken:
    """Validate an access token string and return its active user, or raise TokenRejected."""
    validated, _ = validate_access_token(raw_token)
    return authenticate_validated_token(validated)


def _reason(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        code = detail.get("code")
        if code:
            return str(code)
    code = getattr(exc, "default_code", None) or type(exc).__name__
    return str(code)
