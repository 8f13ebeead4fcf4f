"""simplejwt tokens that carry the user's token version, so one logout revokes them all."""

from rest_framework_simplejwt.serializers import (
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.tokens import RefreshToken

from reasonflow.users.models import User

VERSION_CLAIM = "ver"


class VersionedRefreshToken(RefreshToken):
    """A refresh token (and the access tokens made from it) stamped with `token_version`."""

    @classmethod
    def for_user(cls, user: User) -> "VersionedRefreshToken":
        token = super().for_user(user)
        token[VERSION_CLAIM] = user.token_version
        return token


def token_version_is_current(token, user: User) -> bool:
    """Tokens minted before the user's last revocation carry an older version."""
    return token.get(VERSION_CLAIM, 0) == user.token_version


class LoginSerializer(TokenObtainPairSerializer):
    token_class = VersionedRefreshToken


class RefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh (rotation + blacklist), refusing tokens from before a revocation."""

    def validate(self, attrs):
        from rest_framework_simplejwt.exceptions import InvalidToken
        from rest_framework_simplejwt.settings import api_settings

        refresh = self.token_class(attrs["refresh"])
        user = User.objects.filter(id=refresh.get(api_settings.USER_ID_CLAIM)).first()
        if user is None or not token_version_is_current(refresh, user):
            raise InvalidToken("Token has been revoked")
        return super().validate(attrs)
