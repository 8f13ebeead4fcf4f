"""reasonflow/users/selectors.py: the token's user read by id from SQL built once."""

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from reasonflow.users.models import User
from reasonflow.users.selectors import user_get_by_id

pytestmark = pytest.mark.django_db


def loaded(user: User) -> dict:
    return {field.attname: getattr(user, field.attname) for field in User._meta.concrete_fields}


@pytest.mark.parametrize("signed_in", [False, True])
def test_a_user_is_read_as_the_orm_reads_it_types_included(make_user, signed_in):
    user = make_user(full_name="Ada Lovelace", is_staff=True)
    if signed_in:
        User.objects.filter(pk=user.pk).update(last_login=timezone.now(), token_version=3)

    ours, orms = user_get_by_id(user_id=user.pk), User.objects.get(pk=user.pk)

    assert loaded(ours) == loaded(orms)
    assert {name: type(value) for name, value in loaded(ours).items()} == {
        name: type(value) for name, value in loaded(orms).items()
    }
    assert not ours.get_deferred_fields() and not ours._state.adding
    assert ours._state.db == orms._state.db
    # post_init ran, as for any loaded user: a later save can tell a revocation.
    assert ours._revocation_state == orms._revocation_state


def test_a_user_is_read_by_its_id_as_a_string_too(make_user):
    user = make_user()
    assert user_get_by_id(user_id=str(user.pk)).pk == user.pk


def test_an_unknown_id_is_does_not_exist(make_user):
    make_user()
    with pytest.raises(User.DoesNotExist):
        user_get_by_id(user_id=uuid.uuid4())


@pytest.mark.parametrize("value", ["not-a-uuid", {"id": 1}, [1, 2], 2**200, -1])
def test_a_value_that_is_no_id_raises_what_the_orm_raises(value):
    with pytest.raises((ValidationError, ValueError, TypeError, OverflowError)) as ours:
        user_get_by_id(user_id=value)
    with pytest.raises((ValidationError, ValueError, TypeError, OverflowError)) as orms:
        User.objects.get(pk=value)
    assert type(ours.value) is type(orms.value)


def test_one_statement_reads_the_user(make_user, django_assert_num_queries):
    user = make_user()
    user_get_by_id(user_id=user.pk)  # the SQL is built on first use
    with django_assert_num_queries(1):
        user_get_by_id(user_id=user.pk)
