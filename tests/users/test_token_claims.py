"""A signed token with a claim of the wrong type is a 401 on every endpoint that reads tokens
(REST authentication, refresh, logout), never a 500. The WebSocket's 4002 is tested in
tests/notifications/test_token_claims.py with the same cases."""

import pytest
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.tokens import RefreshToken

pytestmark = pytest.mark.django_db

# (claim, value): JSON values that PyJWT lets through (or not) and simplejwt, or our own checks,
# would have choked on or accepted.
MALFORMED_CLAIMS = [
    ("exp", "9999999999"),
    ("exp", 10**20),
    ("exp", 1e300),
    ("exp", True),
    ("exp", None),
    ("exp", [9999999999]),
    ("iat", "1700000000"),
    ("iat", 10**20),
    ("iat", {"t": 1}),
    ("nbf", "0"),
    ("nbf", None),
    ("jti", 123),
    ("jti", None),
    ("token_type", None),
    ("token_type", ["access", "refresh"]),
    ("user_id", 123),
    ("user_id", None),
    ("user_id", ["x"]),
    ("ver", "0"),
    ("ver", False),
    ("ver", 0.0),
    ("ver", -1),
    ("ver", None),
    ("hash_password", 123),
    ("hash_password", None),
    ("hash_password", {"h": "x"}),
]
CASE_IDS = [f"{claim}={value!r}" for claim, value in MALFORMED_CLAIMS]


def signed_tokens(user, **overrides) -> dict[str, str]:
    """A refresh and an access token for `user`, as login makes them, with `overrides` applied
    to their claims and signed with the real signing key."""
    refresh = RefreshToken.for_user(user)
    refresh["ver"] = user.token_version
    access = refresh.access_token
    return {
        "refresh": token_backend.encode({**refresh.payload, **overrides}),
        "access": token_backend.encode({**access.payload, **overrides}),
    }


def test_the_unmodified_tokens_are_accepted(api_client, user):
    tokens = signed_tokens(user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.get("/api/v1/notifications/events").status_code == 200
    api_client.credentials()
    response = api_client.post(
        "/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json"
    )
    assert response.status_code == 200


@pytest.mark.parametrize(("claim", "value"), MALFORMED_CLAIMS, ids=CASE_IDS)
def test_an_access_token_with_a_malformed_claim_is_401(api_client, user, claim, value):
    token = signed_tokens(user, **{claim: value})["access"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.get("/api/v1/notifications/events")
    assert response.status_code == 401, response.content
    assert "detail" in response.json()


@pytest.mark.parametrize("path", ["/api/v1/auth/refresh", "/api/v1/auth/logout"])
@pytest.mark.parametrize(("claim", "value"), MALFORMED_CLAIMS, ids=CASE_IDS)
def test_a_refresh_token_with_a_malformed_claim_is_401(api_client, user, path, claim, value):
    token = signed_tokens(user, **{claim: value})["refresh"]
    response = api_client.post(path, {"refresh": token}, format="json")
    assert response.status_code == 401, response.content
    assert "detail" in response.json()
    user.refresh_from_db()
    assert user.token_version == 0  # a refused logout revoked nothing
