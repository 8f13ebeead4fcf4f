"""State changes of users: registration, token issuing, rotation and revocation."""

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from reasonflow.users.authentication import JWTAuthentication
from reasonflow.users.models import User
from reasonflow.users.tokens import RefreshToken


def user_register(*, email: str, password: str) -> User:
    """Create an active user. Raises django.core.exceptions.ValidationError on a weak password."""
    email = User.objects.normalize_email(email).lower()
    validate_password(password, user=User(email=email))
    with transaction.atomic():
        return User.objects.create_user(email=email, password=password)


def user_issue_tokens(*, user: User) -> dict[str, str]:
    """A fresh refresh/access token pair for `user` (simplejwt, so REST and WS accept it)."""
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def user_rotate_refresh_token(*, refresh: RefreshToken) -> dict[str, str]:
    """Exchange a verified refresh token for a new pair, exactly once: of concurrent exchanges
    of one token one gets the pair, the others TokenError. A token whose user may no longer
    use it (unknown, inactive, password changed, logged out) raises AuthenticationFailed."""
    user = JWTAuthentication().get_user(refresh)
    outstanding = _outstanding_token(refresh, user)
    try:
        with transaction.atomic():
            # BlacklistedToken.token is unique: of concurrent inserts one commits, the others
            # wait for it and fail. simplejwt's own blacklist() uses get_or_create, which lets
            # every one of them win.
            BlacklistedToken.objects.create(token=outstanding)
            return user_issue_tokens(user=user)
    except IntegrityError:
        raise TokenError("Token is blacklisted") from None


def user_logout(*, refresh: RefreshToken) -> None:
    """End every session of the refresh token's user (see user_revoke_tokens). The token must
    still be usable by its user, else AuthenticationFailed."""
    user = JWTAuthentication().get_user(refresh)
    _outstanding_token(refresh, user)  # so that the blacklisting below includes this one
    user_revoke_tokens(user=user)


def user_revoke_tokens(*, user: User) -> None:
    """Refuse every token issued to `user` so far: blacklist their refresh tokens, bump the
    version their access tokens carry, and so close their live sockets (signals)."""
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        locked.token_version += 1
        locked.save(update_fields=["token_version"])
        _blacklist_refresh_tokens(user=locked)
    user.token_version = locked.token_version


def user_change_password(*, user: User, new_password: str) -> dict[str, str]:
    """Set a new password (validated); every older token stops working (the refresh tokens are
    blacklisted, the access tokens carry the old password's hash), new ones are returned."""
    validate_password(new_password, user=user)
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        _blacklist_refresh_tokens(user=user)
    return user_issue_tokens(user=user)


def _blacklist_refresh_tokens(*, user: User) -> None:
    # A token minted by a refresh racing with this is missed here, but it carries the old
    # version and password hash, which every check (REST, WS, refresh, logout) refuses.
    unexpired = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in unexpired], ignore_conflicts=True
    )


def _outstanding_token(refresh: RefreshToken, user: User) -> OutstandingToken:
    # Every refresh token we mint is recorded (RefreshToken.for_user); get_or_create covers
    # one minted elsewhere with our key.
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=refresh[api_settings.JTI_CLAIM],
        defaults={
            "user": user,
            "token": str(refresh),
            "created_at": refresh.current_time,
            "expires_at": datetime_from_epoch(refresh["exp"]),
        },
    )
    return outstanding


DEMO_EMAIL = "demo@reasonflow.local"
DEMO_PASSWORD = "reasonflow-demo-2026"  # noqa: S105 - printed on purpose for local demos


class DemoUserRefused(Exception):
    """The demo user exists only with DEBUG on: its password is public."""


def user_ensure_demo() -> User:
    """The development superuser of the embedded quickstart, created (or reset to its known
    password) on demand. Raises DemoUserRefused with DEBUG off, touching nothing."""
    if not settings.DEBUG:
        raise DemoUserRefused("the demo user is for development only (DEBUG is off)")
    user = User.objects.filter(email=DEMO_EMAIL).first()
    if user is None:
        return User.objects.create_superuser(email=DEMO_EMAIL, password=DEMO_PASSWORD)
    if not (user.check_password(DEMO_PASSWORD) and user.is_active and user.is_superuser):
        user.set_password(DEMO_PASSWORD)
        user.is_active = user.is_staff = user.is_superuser = True
        user.save(update_fields=["password", "is_active", "is_staff", "is_superuser"])
    return user


def user_demo_sign_in() -> dict[str, str]:
    """A token pair for the demo user (the console's one-click login in development).
    Raises DemoUserRefused with DEBUG off."""
    return user_issue_tokens(user=user_ensure_demo())
