"""The --user option shared by the operator commands: an email or a UUID."""

from django.core.management.base import CommandError

from reasonflow.users.models import User
from reasonflow.users.selectors import user_get_by_identifier


def user_from_option(identifier: str) -> User:
    """The user named by `identifier`, or a CommandError saying none exists."""
    user = user_get_by_identifier(identifier=identifier)
    if user is None:
        raise CommandError(f"No user with id or email {identifier!r}.")
    return user
