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

    page = selectors.email_list_for_user(user=user)[:50]
    plan = page.explain()

    if connection.vendor == "postgresql":
        assert "email_owner_newest" in plan, plan
        assert "Sort" not in plan, plan
    else:
        assert "email_owner_newest" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    newest_first = sorted(Email.objects.filter(owner=user), key=lambda e: e.created_at)[::-1]
    assert [email.id for email in page] == [email.id for email in newest_first[:50]]
