"""The event number's rename keeps every stored event, its number and its uniqueness."""

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("notifications", "0002_presence")]
AFTER = [("notifications", "0003_event_id")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def unique_constraints() -> dict[str, tuple[str, ...]]:
    """{name: columns} of the event table's unique constraints, the primary key aside."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, "notifications_event")
    return {
        name: tuple(details["columns"])
        for name, details in found.items()
        if details["unique"] and not details["primary_key"]
    }


@pytest.fixture
def restores_latest_schema():
    yield
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("restores_latest_schema")
def test_renaming_sequence_to_event_id_keeps_stored_events_and_their_uniqueness():
    apps = migrate(BEFORE)
    user = get_user_model().objects.create_user(email="before-rename@example.com")  # users stay put
    old_event = apps.get_model("notifications", "Event")
    for number in (1, 2):
        old_event.objects.create(
            user_id=user.pk, sequence=number, type="draft_ready", data={}, created_at=timezone.now()
        )
    assert ("user_id", "sequence") in unique_constraints().values()

    apps = migrate(AFTER)
    event = apps.get_model("notifications", "Event")
    assert list(event.objects.filter(user_id=user.pk).values_list("event_id", flat=True)) == [1, 2]
    assert unique_constraints() == {"event_user_event_id_unique": ("user_id", "event_id")}
    with pytest.raises(IntegrityError), transaction.atomic():
        event.objects.create(
            user_id=user.pk, event_id=2, type="draft_ready", data={}, created_at=timezone.now()
        )

    apps = migrate(BEFORE)  # and back: the numbers survive the reverse step too
    numbers = apps.get_model("notifications", "Event").objects.values_list("sequence", flat=True)
    assert sorted(numbers.filter(user_id=user.pk)) == [1, 2]
