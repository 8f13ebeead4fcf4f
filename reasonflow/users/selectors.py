"""Reads of users."""

import uuid

from django.db import connection

from reasonflow.db import rows
from reasonflow.users.models import User


def user_get_by_id(*, user_id) -> User:
    """The user whose id is `user_id`, every field loaded and typed as by
    `User.objects.get(id=user_id)`; User.DoesNotExist when there is none, ValidationError
    (or ValueError, TypeError) for a value that is no id.

    Authentication reads the token's user for every REST request: its SQL is built once
    (reasonflow.db.rows).
    """
    users = rows.columns(User, connection)
    sql = rows.statement(
        "user by id",
        connection,
        lambda: (
            f"SELECT {users.sql} FROM {users.table} "  # noqa: S608
            f"WHERE {users.column('id', connection)} = %s"
        ),
    )
    with rows.cursor(connection) as cursor:
        cursor.execute(sql, [users.value("id", user_id, connection)])
        row = cursor.fetchone()
    if row is None:
        raise User.DoesNotExist(f"No user with id {user_id}.")
    return users.load(connection, row)


def user_get_by_identifier(*, identifier: str) -> User | None:
    """The user whose UUID or email (any case) is `identifier`, or None."""
    if not isinstance(identifier, str) or not identifier.strip():
        return None
    identifier = identifier.strip()
    try:
        return User.objects.filter(id=uuid.UUID(identifier)).first()
    except ValueError:
        return User.objects.filter(email__iexact=identifier).first()


def user_ids_by_identifier(*, identifiers: list[str]) -> dict[str, uuid.UUID]:
    """The id of each user named in `identifiers` by UUID or email (any case), in two queries;
    identifiers naming nobody are left out."""
    by_id: dict[uuid.UUID, list[str]] = {}
    by_email: dict[str, list[str]] = {}
    for identifier in identifiers:
        value = identifier.strip()
        try:
            by_id.setdefault(uuid.UUID(value), []).append(identifier)
        except ValueError:
            by_email.setdefault(value.lower(), []).append(identifier)
    found: dict[str, uuid.UUID] = {}
    if by_id:
        for user_id in User.objects.filter(id__in=by_id).values_list("id", flat=True):
            found.update(dict.fromkeys(by_id[user_id], user_id))
    if by_email:
        rows = User.objects.filter(email__in=by_email).values_list("email", "id")
        for email, user_id in rows:
            found.update(dict.fromkeys(by_email[email], user_id))
    return found
