"""Reads of users."""

import uuid

from reasonflow.users.models import User


def user_get_by_identifier(*, identifier: str) -> User | None:
    """The user whose UUID or email (any case) is `identifier`, or None."""
    if not isinstance(identifier, str) or not identifier.strip():
        return None
    identifier = identifier.strip()
    try:
        return User.objects.filter(id=uuid.UUID(identifier)).first()
    except ValueError:
        return User.objects.filter(email__iexact=identifier).first()
