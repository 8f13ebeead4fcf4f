"""The socket runtime's reads: who is connecting (with where each stream resumes) and the
token state of connected users, each for many sockets in one query."""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection
from django.db.models import Q

from notifications.models import Event, EventCounter
from notifications.realtime.database import BatchedRead
from reasonflow.db import rows

# The user fields the token policy reads (reasonflow.users.authentication.check_user).
_POLICY_FIELDS = ("id", "is_active", "password", "token_version")


@dataclass(frozen=True, slots=True)
class UserTokenState:
    """What the token policy (reasonflow.users.authentication.check_user) reads of a user, as
    stored now: enough to re-check an open socket's token without building a model."""

    id: uuid.UUID
    is_active: bool
    password: str
    token_version: int


def users_token_states_with_last_event_ids(
    *, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[UserTokenState, int]]:
    """For each of these users that still exists (a deleted one is missing): their token
    state and their newest event id (0 when none). One query."""
    if not user_ids:
        return {}
    return {
        user_id: (UserTokenState(user_id, is_active, password, version), latest or 0)
        for user_id, is_active, password, version, latest in _policy_rows(user_ids=user_ids)
    }


@dataclass(frozen=True)
class ResumePoint:
    last_event_id: int
    recovered: bool


# What a connecting socket asks of the database: its token's user id and the last event id
# the client says it has (None: a fresh start).
ConnectRequest = tuple[uuid.UUID, int | None]


def connecting_users_with_resume_points(
    *, requests: Iterable[ConnectRequest]
) -> dict[ConnectRequest, tuple[AbstractBaseUser | None, ResumePoint]]:
    """For each connecting socket: its user (only the fields the token policy reads; None
    when there is none) and where its stream resumes. One query for any number of sockets,
    a second only when some resume from an older event id.

    Resuming is recovered unless the next event was pruned, or the client claims an id this
    store never issued (a reset database): either way it must reload its state.
    """
    requests = set(requests)
    users = _users_with_last_event_ids(user_ids={user_id for user_id, _ in requests})
    resuming = {
        (user_id, last_event_id + 1)
        for user_id, last_event_id in requests
        if last_event_id is not None and last_event_id < users.get(user_id, (None, 0))[1]
    }
    kept = _kept_events(resuming)
    found = {}
    for user_id, last_event_id in requests:
        user, latest = users.get(user_id, (None, 0))
        if last_event_id is None or last_event_id == latest:
            recovered = True
        elif last_event_id > latest:
            recovered = False
        else:
            recovered = (user_id, last_event_id + 1) in kept
        found[(user_id, last_event_id)] = (user, ResumePoint(latest, recovered))
    return found


def _users_with_last_event_ids(*, user_ids: set[uuid.UUID]) -> dict:
    """{user id: (user with the policy fields, newest event id)} for the users that exist."""
    user_model = get_user_model()
    meta = user_model._meta
    # from_db() takes the loaded values in the model's field order.
    names = [field.attname for field in meta.concrete_fields if field.attname in _POLICY_FIELDS]
    found = {}
    for *policy_values, latest in _policy_rows(user_ids=user_ids):
        loaded = dict(zip(_POLICY_FIELDS, policy_values, strict=True))
        user = user_model.from_db(connection.alias, names, [loaded[name] for name in names])
        found[user.pk] = (user, latest or 0)
    return found


def _policy_rows(*, user_ids: Iterable[uuid.UUID]) -> list[tuple]:
    """(id, is_active, password, token_version, newest event id or None) of each user that
    exists, typed as the ORM would (UUID id, bool is_active) on every database.

    SQL built once (reasonflow.db.rows): it runs for every batch of connecting sockets, and
    building the ORM query cost more than running it.
    """
    users = rows.columns(get_user_model(), connection, _POLICY_FIELDS)
    counters = rows.columns(EventCounter, connection, ("user_id", "last_event_id"))
    params = [users.value("id", user_id, connection) for user_id in user_ids]

    def write() -> str:
        user_id = users.column("id", connection)
        return (
            f"SELECT {users.sql}, {counters.column('last_event_id', connection)} "  # noqa: S608
            f"FROM {users.table} LEFT JOIN {counters.table} "
            f"ON {counters.column('user_id', connection)} = {user_id} "
            f"WHERE {user_id} IN ({', '.join(['%s'] * len(params))})"
        )

    # One statement per batch size: at most the batch limit (BatchedRead, 500) of them.
    sql = rows.statement(("connecting users", len(params)), connection, write)
    with rows.cursor(connection) as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    return [(*users.converted(connection, row), row[users.width]) for row in fetched]


def _kept_events(wanted: set[tuple[uuid.UUID, int]]) -> set[tuple[uuid.UUID, int]]:
    """Which of these (user id, event id) events are still kept."""
    if not wanted:
        return set()
    match = Q()
    for user_id, event_id in wanted:
        match |= Q(user_id=user_id, event_id=event_id)
    return set(Event.objects.filter(match).values_list("user_id", "event_id"))


# Every connecting socket's database visit; a reconnect rush is served a batch per query.
connecting_user = BatchedRead(
    lambda requests: connecting_users_with_resume_points(requests=requests),
    window=lambda: settings.NOTIFICATIONS_READ_BATCH_WINDOW,
)
