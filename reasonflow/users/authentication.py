"""The one access-token policy of REST and WebSocket: simplejwt's, plus revocation."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken

from reasonflow.users.tokens import token_version_is_current


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's JWTAuthentication that also refuses revoked tokens and malformed user ids."""

    def get_user(self, validated_token):
        try:
            user = super().get_user(validated_token)
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            # A signed token whose user_id is not a UUID (a string, an object) makes the
            # lookup raise instead of failing authentication.
            raise InvalidToken("Token contained an invalid user id") from None
        if not token_version_is_current(validated_token, user):
            raise AuthenticationFailed("Token has been revoked", code="token_revoked")
        return user
