"""The auth endpoints: register, login, refresh (rotation + blacklist), logout."""

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from reasonflow.users.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

STRONG = "quiet-lantern-orbit-73"


def register(client, email="new@example.com", password=STRONG):
    return client.post(
        "/api/v1/auth/register", {"email": email, "password": password}, format="json"
    )


def test_register_creates_a_user_and_returns_tokens(api_client):
    response = register(api_client, email="New.Person@Example.com")
    assert response.status_code == 201
    body = response.json()
    user = User.objects.get(email="new.person@example.com")
    assert body["user"] == {"id": str(user.id), "email": "new.person@example.com"}
    assert AccessToken(body["access"])["user_id"] == str(user.id)
    assert set(body) == {"user", "access", "refresh"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": STRONG}, "email"),
        ({"email": "x@example.com"}, "password"),
        ({"email": "not-an-email", "password": STRONG}, "email"),
        ({"email": "x@example.com", "password": "123"}, "password"),
        ({"email": "x@example.com", "password": "password"}, "password"),
        ({"email": "x@example.com", "password": "12345678901"}, "password"),
        ({"email": ["x@example.com"], "password": STRONG}, "email"),
    ],
)
def test_register_rejects_bad_input_naming_the_field(api_client, payload, field):
    response = api_client.post("/api/v1/auth/register", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not User.objects.exists()


def test_register_rejects_a_duplicate_email_in_any_case(api_client, user):
    response = register(api_client, email=user.email.upper())
    assert response.status_code == 400
    assert "email" in response.json()


def test_register_rejects_a_body_that_is_not_json(api_client):
    response = api_client.post("/api/v1/auth/register", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_login_returns_an_access_and_a_refresh_token(api_client, user):
    response = api_client.post(
        "/api/v1/auth/login", {"email": user.email.upper(), "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_login_with_bad_credentials_is_refused(api_client, user, password):
    response = api_client.post(
        "/api/v1/auth/login", {"email": user.email, "password": password}, format="json"
    )
    assert response.status_code in {400, 401}
    assert response.json()


def test_login_of_an_inactive_user_is_refused(api_client, make_user):
    inactive = make_user(is_active=False)
    response = api_client.post(
        "/api/v1/auth/login", {"email": inactive.email, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 401


def login(client, user):
    return client.post(
        "/api/v1/auth/login", {"email": user.email, "password": PASSWORD}, format="json"
    ).json()


def test_refresh_rotates_and_blacklists_the_old_refresh_token(api_client, user):
    tokens = login(api_client, user)
    response = api_client.post(
        "/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json"
    )
    assert response.status_code == 200
    rotated = response.json()
    assert set(rotated) == {"access", "refresh"}
    assert rotated["refresh"] != tokens["refresh"]
    again = api_client.post("/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401


@pytest.mark.parametrize("refresh", ["garbage", ""])
def test_refresh_with_a_bad_token_is_refused(api_client, refresh):
    response = api_client.post("/api/v1/auth/refresh", {"refresh": refresh}, format="json")
    assert response.status_code in {400, 401}


def test_refresh_with_an_access_token_is_refused(api_client, user):
    tokens = login(api_client, user)
    response = api_client.post("/api/v1/auth/refresh", {"refresh": tokens["access"]}, format="json")
    assert response.status_code == 401


def test_logout_blacklists_the_refresh_token_and_revokes_access_tokens(api_client, user):
    tokens = login(api_client, user)
    other_device = login(api_client, user)
    response = api_client.post("/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 204
    for access in (tokens["access"], other_device["access"]):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
        assert api_client.get("/api/v1/notifications/events").status_code == 401
    api_client.credentials()
    stale = api_client.post(
        "/api/v1/auth/refresh", {"refresh": other_device["refresh"]}, format="json"
    )
    assert stale.status_code == 401
    fresh = login(api_client, user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {fresh['access']}")
    assert api_client.get("/api/v1/notifications/events").status_code == 200
    api_client.credentials()
    refresh = api_client.post("/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refresh.status_code == 401
    again = api_client.post("/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401


def test_logout_without_a_token_names_the_field(api_client):
    response = api_client.post("/api/v1/auth/logout", {}, format="json")
    assert response.status_code == 400
    assert "refresh" in response.json()


def test_an_access_token_authenticates_rest_requests(api_client, user):
    tokens = login(api_client, user)
    assert api_client.get("/api/v1/notifications/events").status_code == 401
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.get("/api/v1/notifications/events").status_code == 200


def test_password_change_returns_fresh_tokens_and_revokes_old_ones(api_client, user):
    tokens = login(api_client, user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    response = api_client.post(
        "/api/v1/auth/password",
        {"current_password": PASSWORD, "new_password": STRONG},
        format="json",
    )
    assert response.status_code == 200
    assert api_client.get("/api/v1/notifications/events").status_code == 401
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    assert api_client.get("/api/v1/notifications/events").status_code == 200
    user.refresh_from_db()
    assert user.check_password(STRONG)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"current_password": "wrong", "new_password": STRONG}, "current_password"),
        ({"current_password": PASSWORD, "new_password": "123"}, "new_password"),
        ({"current_password": PASSWORD}, "new_password"),
    ],
)
def test_password_change_rejects_bad_input_naming_the_field(auth_client, user, payload, field):
    response = auth_client.post("/api/v1/auth/password", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


@pytest.mark.parametrize("user_id", ["abc", {"id": 1}, [1], 12345678901234567890123])
def test_a_signed_token_with_a_malformed_user_id_is_401_not_500(api_client, user, user_id):
    token = AccessToken.for_user(user)
    token["user_id"] = user_id
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.get("/api/v1/notifications/events")
    assert response.status_code == 401
