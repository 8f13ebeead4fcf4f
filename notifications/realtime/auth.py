"""Access token -> user, through simplejwt's own authentication class.

REST and the WebSocket share one policy (reasonflow.users.authentication): token type,
signature, algorithm, expiry, active user, password change and logout revocation.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from reasonflow.users.authentication import JWTAuthentication
from reasonflow.users.tokens import VERSION_CLAIM

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


# --- the first frame and the policy claims a socket keeps ------------------------------------


class FirstFrameError(Exception):
    """The first frame is not {"token": ..., "last_event_id": ...}: close 4001."""


def parse_first_frame(text: str | None) -> tuple[str, int | None]:
    """(token, last_event_id or None) of an authentication frame, else FirstFrameError."""
    if text is None:
        raise FirstFrameError("binary first frame")
    try:
        content = json.loads(text)
    except (ValueError, RecursionError):
        raise FirstFrameError("first frame is not JSON") from None
    if not isinstance(content, dict):
        raise FirstFrameError("first frame is not an object")
    token = content.get("token")
    if not isinstance(token, str) or not token.strip():
        raise FirstFrameError("no token")
    last_event_id = content.get("last_event_id")
    if last_event_id is not None and (
        isinstance(last_event_id, bool) or not isinstance(last_event_id, int) or last_event_id < 0
    ):
        raise FirstFrameError("last_event_id is not a non-negative integer")
    return token, last_event_id


_ABSENT = object()  # a claim the token does not have (unlike one that is null)


def _policy_claim_names() -> tuple[str, ...]:
    # What JWTAuthentication.check_user reads of a token: an open socket keeps these claims,
    # not its whole token, so the delivery watch can check it again (pinned by
    # test_the_delivery_watch_keeps_sockets_whose_tokens_still_pass).
    return (VERSION_CLAIM, api_settings.REVOKE_TOKEN_CLAIM)


def policy_claims(validated: Token) -> tuple:
    """What an open socket keeps of its token, for claims_pass()."""
    return policy_claims_of(validated.payload)


def policy_claims_of(payload: dict) -> tuple:
    """policy_claims() of a token's payload, or of the dict kept_policy_claims() made."""
    return tuple(payload.get(name, _ABSENT) for name in _policy_claim_names())


def kept_policy_claims(validated: Token) -> dict:
    """The policy claims the token has, as JSON (a stream ticket stores them)."""
    payload = validated.payload
    return {name: payload[name] for name in _policy_claim_names() if name in payload}


def claims_pass(claims: tuple, user) -> bool:
    """True while a token with these policy_claims() passes the token policy (the checks REST
    applies) against `user` as stored now (a model or a selectors.UserTokenState)."""
    kept = zip(_policy_claim_names(), claims, strict=True)
    try:
        JWTAuthentication.check_user(
            {name: value for name, value in kept if value is not _ABSENT}, user
        )
    except AuthenticationFailed:
        return False
    return True


def authenticate_refresh(token: str) -> tuple[AuthenticatedToken, tuple]:
    """An in-band refresh's token, authenticated, and its policy claims."""
    validated, _ = validate_access_token(token)
    return authenticate_validated_token(validated), policy_claims(validated)
