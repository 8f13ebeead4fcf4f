import pytest
from django.db import connection
from django.utils import timezone

from emails import selectors
from emails.models import Email
from tests.emails.factories import EmailFactory


@pytest.mark.django_db
def test_a_page_of_the_list_is_read_from_the_index_not_sorted_from_the_whole_mailbox(user):
    # A sync stores its emails with one received_at: the tie-break must come from the index too,
    # or each page sorts every email of the owner (5 ms at 3,200 emails, linear in the mailbox).
    received = timezone.now()
    Email.objects.bulk_create(
        EmailFactory.build(owner=user, received_at=received) for _ in range(2000)
    )
    EmailFactory.create_batch(50)  # other owners' emails
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE emails_email")

    listing = selectors.email_list_for_user(user=user)
    sql, params = listing.sql(slice(0, 50))
    explain = "EXPLAIN" if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN"
    with connection.cursor() as cursor:
        cursor.execute(f"{explain} {sql}", params)
        plan = "\n".join(" ".join(str(value) for value in row) for row in cursor.fetchall())
    page = listing[0:50]

    if connection.vendor == "postgresql":
        assert "email_owner_newest" in plan, plan
        assert "Sort" not in plan, plan
    else:
        assert "email_owner_newest" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    newest_first = sorted(Email.objects.filter(owner=user), key=lambda e: e.created_at)[::-1]
    assert [email.id for email in page] == [email.id for email in newest_first[:50]]


def _values(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.mark.django_db
def test_a_draft_is_locked_with_its_email_as_the_orm_reads_them(user):
    from django.db import transaction

    from emails.models import Draft
    from tests.emails.factories import DraftFactory

    draft = DraftFactory(email=EmailFactory(owner=user, classification_reasons=["asks"]))
    with transaction.atomic():
        ours = selectors.draft_lock_for_user(user=user, draft_id=str(draft.pk))
    orms = Draft.objects.select_related("email").get(pk=draft.pk)
    for mine, theirs in ((ours, orms), (ours.email, orms.email)):
        assert _values(mine) == _values(theirs)
        assert {k: type(v) for k, v in _values(mine).items()} == {
            k: type(v) for k, v in _values(theirs).items()
        }
        assert not mine._state.adding and mine._state.db == theirs._state.db
    assert ours.email.owner is user  # the owner the read was filtered on: no query for it


@pytest.mark.django_db
def test_another_users_draft_and_an_unknown_one_are_404(user, other_user):
    import uuid

    from django.db import transaction
    from django.http import Http404

    from tests.emails.factories import DraftFactory

    draft = DraftFactory(email=EmailFactory(owner=other_user))
    for draft_id in (draft.pk, uuid.uuid4()):
        with pytest.raises(Http404), transaction.atomic():
            selectors.draft_lock_for_user(user=user, draft_id=draft_id)


@pytest.mark.django_db(transaction=True)
def test_a_draft_is_locked_only_inside_a_transaction(user):
    from django.db import transaction

    from tests.emails.factories import DraftFactory

    draft = DraftFactory(email=EmailFactory(owner=user))
    with pytest.raises(transaction.TransactionManagementError):
        selectors.draft_lock_for_user(user=user, draft_id=draft.pk)


@pytest.mark.django_db(transaction=True)
def test_the_draft_and_its_email_stay_locked_until_the_transaction_ends(user):
    import psycopg
    from django.db import transaction

    from tests.emails.factories import DraftFactory

    if connection.vendor != "postgresql":
        pytest.skip("SQLite locks the whole database for a write transaction")
    draft = DraftFactory(email=EmailFactory(owner=user))
    params = connection.get_connection_params()
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SET lock_timeout = '100ms'")

        def locked(table: str, row_id) -> bool:
            try:
                other.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [row_id])  # noqa: S608
            except psycopg.errors.LockNotAvailable:
                return True
            return False

        with transaction.atomic():
            selectors.draft_lock_for_user(user=user, draft_id=draft.pk)
            assert locked("emails_draft", draft.pk)
            assert locked("emails_email", draft.email_id)
        assert not locked("emails_draft", draft.pk)
        assert not locked("emails_email", draft.email_id)
