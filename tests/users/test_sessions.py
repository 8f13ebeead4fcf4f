"""Refresh-token sessions: one rotation per token even under concurrency (PostgreSQL), and
logout or a password change ending every session of the user."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from reasonflow.users.services import user_issue_tokens
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

STRONG = "quiet-lantern-orbit-73"


def refresh(client, token):
    return client.post("/api/v1/auth/refresh", {"refresh": token}, format="json")


def login(client, user):
    response = client.post(
        "/api/v1/auth/login", {"email": user.email, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    return response.json()


def outstanding_and_blacklisted(user) -> tuple[set[str], set[str]]:
    outstanding = set(OutstandingToken.objects.filter(user=user).values_list("jti", flat=True))
    blacklisted = set(
        BlacklistedToken.objects.filter(token__user=user).values_list("token__jti", flat=True)
    )
    return outstanding, blacklisted


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_refreshes_of_one_token_make_exactly_one_session(user):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL only")
    tokens = user_issue_tokens(user=user)
    attempts = 20
    start = threading.Barrier(attempts)

    def attempt(_):
        client = APIClient()
        try:
            start.wait(timeout=30)
            response = refresh(client, tokens["refresh"])
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        results = list(pool.map(attempt, range(attempts)))
    statuses = sorted(status for status, _ in results)
    print(f"\n{attempts} concurrent refreshes of one token: {statuses.count(200)} x 200")
    assert statuses == [200] + [401] * (attempts - 1)
    # One new session: the login's token (blacklisted) and the one rotation's.
    outstanding, blacklisted = outstanding_and_blacklisted(user)
    assert len(outstanding) == 2
    assert len(blacklisted) == 1
    (winner,) = [body for status, body in results if status == 200]
    assert refresh(APIClient(), winner["refresh"]).status_code == 200


def test_a_rotated_refresh_token_is_refused_and_the_new_one_works(api_client, user):
    tokens = login(api_client, user)
    rotated = refresh(api_client, tokens["refresh"])
    assert rotated.status_code == 200
    assert refresh(api_client, tokens["refresh"]).status_code == 401
    assert refresh(api_client, rotated.json()["refresh"]).status_code == 200


def test_a_refresh_token_minted_before_a_password_change_no_longer_refreshes(api_client, user):
    tokens = login(api_client, user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    changed = api_client.post(
        "/api/v1/auth/password",
        {"current_password": PASSWORD, "new_password": STRONG},
        format="json",
    )
    assert changed.status_code == 200
    api_client.credentials()
    stale = refresh(api_client, tokens["refresh"])
    assert stale.status_code == 401
    assert "access" not in stale.json()
    assert refresh(api_client, changed.json()["refresh"]).status_code == 200


def test_a_password_change_blacklists_every_outstanding_refresh_token(api_client, user):
    devices = [login(api_client, user) for _ in range(3)]
    rotated = refresh(api_client, devices[0]["refresh"]).json()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {devices[1]['access']}")
    changed = api_client.post(
        "/api/v1/auth/password",
        {"current_password": PASSWORD, "new_password": STRONG},
        format="json",
    ).json()
    api_client.credentials()
    outstanding, blacklisted = outstanding_and_blacklisted(user)
    fresh = RefreshToken(changed["refresh"])["jti"]
    assert blacklisted == outstanding - {fresh}
    for token in [rotated["refresh"]] + [device["refresh"] for device in devices]:
        assert refresh(api_client, token).status_code == 401


def test_logout_blacklists_every_outstanding_refresh_token_of_the_user(
    api_client, user, other_user
):
    devices = [login(api_client, user) for _ in range(3)]
    rotated = refresh(api_client, devices[2]["refresh"]).json()
    bystander = login(api_client, other_user)
    response = api_client.post(
        "/api/v1/auth/logout", {"refresh": devices[0]["refresh"]}, format="json"
    )
    assert response.status_code == 204
    outstanding, blacklisted = outstanding_and_blacklisted(user)
    assert blacklisted == outstanding
    assert len(outstanding) == 4
    for token in [rotated["refresh"]] + [device["refresh"] for device in devices]:
        assert refresh(api_client, token).status_code == 401
    assert outstanding_and_blacklisted(other_user)[1] == set()
    assert refresh(api_client, bystander["refresh"]).status_code == 200
    assert refresh(api_client, login(api_client, user)["refresh"]).status_code == 200


def test_logout_with_a_refresh_token_from_before_a_password_change_is_refused(api_client, user):
    old = login(api_client, user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {old['access']}")
    new = api_client.post(
        "/api/v1/auth/password",
        {"current_password": PASSWORD, "new_password": STRONG},
        format="json",
    ).json()
    api_client.credentials()
    response = api_client.post("/api/v1/auth/logout", {"refresh": old["refresh"]}, format="json")
    assert response.status_code == 401
    # The stale token ended no session: the one made by the password change still refreshes.
    assert refresh(api_client, new["refresh"]).status_code == 200


def test_a_refresh_token_of_an_inactive_or_deleted_user_is_refused(api_client, make_user):
    inactive, deleted = make_user(), make_user()
    tokens = [user_issue_tokens(user=who)["refresh"] for who in (inactive, deleted)]
    inactive.is_active = False
    inactive.save()
    deleted.delete()
    for token in tokens:
        response = refresh(api_client, token)
        assert response.status_code == 401
        assert response.json()
