"""reasonflow/db/rows.py: rows read with SQL built once, loaded as the ORM loads them."""

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from emails.models import Draft, Email
from reasonflow.db import rows
from tests.emails.factories import DraftFactory, EmailFactory

pytestmark = pytest.mark.django_db


def _values(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.mark.parametrize("model", [Email, Draft])
def test_a_row_is_loaded_as_the_orm_loads_it_types_included(model):
    draft = DraftFactory(
        email=EmailFactory(classification_reasons=["asks", "kind"], confidence=0.75)
    )
    instance = draft if model is Draft else draft.email
    columns = rows.columns(model, connection)
    with rows.cursor(connection) as cursor:
        cursor.execute(
            f"SELECT {columns.sql} FROM {columns.table} WHERE {columns.column('id', connection)} = %s",  # noqa: E501, S608
            [columns.value("id", instance.pk, connection)],
        )
        loaded = columns.load(connection, cursor.fetchone())
    stored = model.objects.get(pk=instance.pk)
    assert _values(loaded) == _values(stored)
    assert {k: type(v) for k, v in _values(loaded).items()} == {
        k: type(v) for k, v in _values(stored).items()
    }
    assert type(loaded) is model and not loaded._state.adding
    assert loaded._state.db == stored._state.db and not loaded.get_deferred_fields()


def test_a_row_is_loaded_from_its_place_in_a_wider_row():
    draft = DraftFactory()
    drafts, emails = rows.columns(Draft, connection), rows.columns(Email, connection)
    with rows.cursor(connection) as cursor:
        cursor.execute(
            f"SELECT {drafts.sql}, {emails.sql} FROM {drafts.table} JOIN {emails.table} "  # noqa: S608
            f"ON {drafts.column('email', connection)} = {emails.column('id', connection)}"
        )
        row = cursor.fetchone()
    assert drafts.load(connection, row).pk == draft.pk
    assert _values(emails.load(connection, row, drafts.width)) == _values(draft.email)


def test_columns_are_built_once_per_model_and_vendor():
    assert rows.columns(Email, connection) is rows.columns(Email, connection)
    assert rows.columns(Email, connection) is not rows.columns(Draft, connection)


@pytest.mark.parametrize("value", ["not-a-uuid", {"id": 1}, [1], 2**200])
def test_a_value_a_field_refuses_raises_what_the_orm_raises(value):
    columns = rows.columns(Draft, connection)
    with pytest.raises((ValidationError, ValueError, TypeError, OverflowError)) as ours:
        columns.value("id", value, connection)
    with pytest.raises((ValidationError, ValueError, TypeError, OverflowError)) as orms:
        list(Draft.objects.filter(pk=value))
    assert type(ours.value) is type(orms.value)
    assert columns.value(
        "id", str(uuid.UUID(int=7)), connection
    ) == Draft._meta.pk.get_db_prep_value(uuid.UUID(int=7), connection)


# --- Listing: what Django's Paginator reads, in the model's order ----------------------------


@pytest.fixture
def mailbox(user, other_user):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    emails = [
        EmailFactory(
            owner=user,
            status="drafted" if index % 3 else "new",
            is_read=bool(index % 2),
            received_at=now - timedelta(minutes=index // 2),  # ties: created_at decides
        )
        for index in range(9)
    ]
    EmailFactory.create_batch(3, owner=other_user)
    return emails


def _orms(user, **where):
    return Email.objects.filter(owner=user, **where)


@pytest.mark.parametrize(
    "where",
    [{}, {"status": "drafted"}, {"is_read": False}, {"status": "new", "is_read": True}],
    ids=str,
)
def test_a_listing_counts_and_slices_as_the_queryset_does(user, mailbox, where):
    listing = rows.Listing(Email, where={"owner": user.pk, **where})
    queryset = _orms(user, **where)
    assert listing.count() == queryset.count()
    for start, stop in ((0, 4), (2, 5), (4, 100), (50, 60)):
        assert [e.pk for e in listing[start:stop]] == [e.pk for e in queryset[start:stop]]
    assert [_values(e) for e in listing[0:100]] == [_values(e) for e in queryset]


def test_a_listings_values_are_the_querysets_values_types_included(user, mailbox):
    names = ("id", "subject", "received_at", "classification_reasons", "confidence", "is_read")
    ours = rows.Listing(Email, where={"owner": user.pk}).values(*names)[0:20]
    orms = list(_orms(user).values(*names))
    assert ours == orms
    assert [{k: type(v) for k, v in row.items()} for row in ours] == [
        {k: type(v) for k, v in row.items()} for row in orms
    ]


def test_django_paginates_a_listing(user, mailbox):
    from django.core.paginator import Paginator

    page = Paginator(rows.Listing(Email, where={"owner": user.pk}), 4).page(3)
    assert page.paginator.count == 9 and page.paginator.num_pages == 3
    assert [e.pk for e in page] == [e.pk for e in _orms(user)[8:9]]


def test_a_listing_reads_a_page_in_one_statement_and_counts_in_another(
    user, mailbox, django_assert_num_queries
):
    listing = rows.Listing(Email, where={"owner": user.pk, "status": "new"})
    listing.count(), listing[0:2]  # built on first use
    with django_assert_num_queries(2):
        assert listing.count() == 3
        assert len(listing[0:2]) == 2


@pytest.mark.parametrize("key", [slice(0, None), slice(-1, 3), slice(3, 1), slice(0, 4, 2), 0])
def test_a_listing_is_read_by_bounded_slices_only(user, key):
    listing = rows.Listing(Email, where={"owner": user.pk})
    with pytest.raises((TypeError, ValueError)):
        listing[key]


def test_a_listing_refuses_none_for_a_condition(user):
    with pytest.raises(ValueError, match="None"):
        rows.Listing(Email, where={"owner": user.pk, "status": None})


def test_a_listing_refuses_a_value_its_field_refuses():
    with pytest.raises(ValidationError):
        rows.Listing(Email, where={"owner": "not-a-uuid"}).count()
