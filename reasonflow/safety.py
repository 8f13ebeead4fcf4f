"""What must never reach a server with DEBUG off: a signing key anyone can read or guess.

Settings call `signing_key()` for SECRET_KEY and JWT_SIGNING_KEY; an unsafe value stops every
process (server, worker, management command) at start-up with `UnsafeSettings`.
"""

from django.core.exceptions import ImproperlyConfigured

DEV_SECRET_KEY = "dev-insecure-change-me-reasonflow-notify-0123456789abcdef"  # noqa: S105
# Django's own bar for a SECRET_KEY (security.W009): 50 characters, 5 of them distinct.
MIN_KEY_LENGTH = 50
MIN_DISTINCT_CHARACTERS = 5
GENERATE_HINT = (
    'python -c "import secrets; print(secrets.token_urlsafe(64))" makes one; '
    "see docs/production.md."
)


class UnsafeSettings(ImproperlyConfigured):
    """A setting that would let anyone forge sessions or tokens, with DEBUG off."""


def signing_key(name: str, value: str | None, *, debug: bool, default: str | None = None) -> str:
    """The key to sign with: `value` when it is safe, else (DEBUG on only) `default` or the
    development key. With DEBUG off a missing, short or committed key raises UnsafeSettings."""
    value = (value or "").strip()
    if debug:
        return value or default or DEV_SECRET_KEY
    if not value:
        if default is not None:
            return default  # e.g. JWT_SIGNING_KEY falls back to the checked SECRET_KEY
        raise UnsafeSettings(f"{name} is not set and DEBUG is off. {GENERATE_HINT}")
    if value == DEV_SECRET_KEY or value.startswith("django-insecure"):
        raise UnsafeSettings(
            f"{name} is the development key committed in this repository (DEBUG is off): "
            f"anyone could sign tokens with it. {GENERATE_HINT}"
        )
    if len(value) < MIN_KEY_LENGTH or len(set(value)) < MIN_DISTINCT_CHARACTERS:
        raise UnsafeSettings(
            f"{name} is too weak ({len(value)} characters; at least {MIN_KEY_LENGTH}, "
            f"{MIN_DISTINCT_CHARACTERS} of them distinct) and DEBUG is off. {GENERATE_HINT}"
        )
    return value
