"""Auth endpoints under /api/v1/auth/: register, login, refresh, logout."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenBlacklistSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from reasonflow.users.models import User
from reasonflow.users.services import (
    DemoUserRefused,
    user_change_password,
    user_demo_sign_in,
    user_issue_tokens,
    user_register,
    user_revoke_tokens,
)


class RegisterApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

        def validate_email(self, value: str) -> str:
            if User.objects.filter(email__iexact=value).exists():
                raise serializers.ValidationError("A user with this email already exists.")
            return value

    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_register(**serializer.validated_data)
        except DjangoValidationError as exc:
            return Response({"password": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
        except IntegrityError:  # a concurrent registration of the same email won the race
            return Response(
                {"email": ["A user with this email already exists."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        body = {"user": {"id": str(user.id), "email": user.email}, **user_issue_tokens(user=user)}
        return Response(body, status=status.HTTP_201_CREATED)


class LogoutApi(APIView):
    """Blacklist the refresh token and revoke every token of its user: their access tokens are
    refused from now on and their open sockets close with 4002, on every server process."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request):
        # Without it DRF turns an invalid refresh token's 401 into a 403.
        return 'Bearer realm="api"'

    def post(self, request):
        serializer = TokenBlacklistSerializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        user_id = serializer.token_class(request.data["refresh"], verify=False).get(
            jwt_settings.USER_ID_CLAIM
        )
        user = User.objects.filter(id=user_id).first()
        if user is not None:
            user_revoke_tokens(user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordChangeApi(APIView):
    """Change the caller's password; every older token stops working, fresh ones come back."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        current_password = serializers.CharField(max_length=128, trim_whitespace=False)
        new_password = serializers.CharField(max_length=128, trim_whitespace=False)

    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not request.user.check_password(serializer.validated_data["current_password"]):
            return Response(
                {"current_password": ["The current password is not correct."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            tokens = user_change_password(
                user=request.user, new_password=serializer.validated_data["new_password"]
            )
        except DjangoValidationError as exc:
            return Response({"new_password": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
        return Response(tokens)


class DemoSignInApi(APIView):
    """Development only (DEBUG on): the demo user's tokens, for the console's one-click sign-in.
    With DEBUG off the endpoint does not exist (404) and no demo user is created."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        try:
            tokens = user_demo_sign_in()
        except DemoUserRefused:
            raise NotFound() from None
        return Response(tokens)
