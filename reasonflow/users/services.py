"""State changes of users: registration and token issuing."""

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from reasonflow.users.models import User
from reasonflow.users.tokens import VersionedRefreshToken


def user_register(*, email: str, password: str) -> User:
    """Create an active user. Raises django.core.exceptions.ValidationError on a weak password."""
    email = User.objects.normalize_email(email).lower()
    validate_password(password, user=User(email=email))
    with transaction.atomic():
        return User.objects.create_user(email=email, password=password)


def user_issue_tokens(*, user: User) -> dict[str, str]:
    """A fresh refresh/access token pair for `user` (simplejwt, so REST and WS accept it)."""
    refresh = VersionedRefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def user_revoke_tokens(*, user: User) -> None:
    """Refuse every token issued to `user` so far and close their live sockets (signals)."""
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        locked.token_version += 1
        locked.save(update_fields=["token_version"])
    user.token_version = locked.token_version


def user_change_password(*, user: User, new_password: str) -> dict[str, str]:
    """Set a new password (validated); old tokens stop working, new ones are returned."""
    validate_password(new_password, user=user)
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
    return user_issue_tokens(user=user)


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
