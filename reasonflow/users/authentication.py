"""The one access-token policy of REST and WebSocket: simplejwt's, plus revocation."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from reasonflow.users.selectors import user_get_by_id
from reasonflow.users.tokens import token_version_is_current


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's JWTAuthentication that also refuses revoked tokens and malformed user ids.

    The lookup and the checks are split so that the WebSocket, which reads the user together
    with its event stream in one query, applies exactly the checks REST does (check_user).
    """

    def get_user(self, validated_token):
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken(_("Token contained no recognizable user identification")) from None
        try:
            user = user_get_by_id(user_id=user_id)  # USER_ID_FIELD is the primary key
        except self.user_model.DoesNotExist:
            raise AuthenticationFailed(_("User not found"), code="user_not_found") from None
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            # A signed token whose user_id is not a UUID (a string, an object) makes the
            # lookup raise instead of failing authentication.
            raise InvalidToken("Token contained an invalid user id") from None
        self.check_user(validated_token, user)
        return user

    @staticmethod
    def check_user(validated_token, user) -> None:
        """simplejwt's checks of a token's user (active, password unchanged since the token
        was issued), then ours (not revoked by logout). Raises AuthenticationFailed."""
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                _("The user's password has been changed."), code="password_changed"
            )
        if not token_version_is_current(validated_token, user):
            raise AuthenticationFailed("Token has been revoked", code="token_revoked")
