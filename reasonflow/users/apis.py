"""Auth endpoints under /api/v1/auth/: register, login, refresh, logout, password change.

Each is throttled (reasonflow/users/throttles.py): over the rate it answers 429 with
Retry-After before doing any work.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, NotFound
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import (
    TokenBlacklistSerializer,
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from reasonflow.api import Serializer
from reasonflow.users.models import User
from reasonflow.users.services import (
    DemoUserRefused,
    user_change_password,
    user_demo_sign_in,
    user_issue_tokens,
    user_logout,
    user_register,
    user_rotate_refresh_token,
)
from reasonflow.users.throttles import (
    FailureThrottledMixin,
    LoginAccountThrottle,
    LoginAddressThrottle,
    PasswordChangeThrottle,
    RefreshThrottle,
    RegisterThrottle,
)
from reasonflow.users.tokens import RefreshToken


@extend_schema_serializer(component_name="TokenPair")
class TokenPairSerializer(Serializer):
    access = serializers.CharField(
        help_text="Access token: the WebSocket's first frame, REST's Bearer."
    )
    refresh = serializers.CharField(help_text="Refresh token: POST auth/refresh for a new pair.")


CREDENTIALS_EXAMPLE = OpenApiExample(
    "Credentials",
    value={"email": "ada@example.com", "password": "correct horse battery staple"},
    request_only=True,
)
REFUSED = OpenApiResponse(description="Throttled: too many attempts (Retry-After says when).")


class RegisterApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [RegisterThrottle]

    @extend_schema_serializer(component_name="RegisterInput")
    class InputSerializer(Serializer):
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

        def validate_email(self, value: str) -> str:
            if User.objects.filter(email__iexact=value).exists():
                raise serializers.ValidationError("A user with this email already exists.")
            return value

    @extend_schema_serializer(component_name="RegisterOutput")
    class OutputSerializer(TokenPairSerializer):
        user = inline_serializer(
            "RegisteredUser", {"id": serializers.UUIDField(), "email": serializers.EmailField()}
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(description="email taken or invalid; password too weak"),
            429: REFUSED,
        },
        examples=[CREDENTIALS_EXAMPLE],
    )
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


class LoginApi(FailureThrottledMixin, TokenObtainPairView):
    """simplejwt's login, throttled on failures per account and per client address."""

    throttle_classes = [LoginAccountThrottle, LoginAddressThrottle]

    @extend_schema_serializer(component_name="TokenObtainPair")
    class InputSerializer(TokenObtainPairSerializer):
        token_class = RefreshToken

    serializer_class = InputSerializer

    @extend_schema(
        responses={
            200: TokenPairSerializer,
            401: OpenApiResponse(description="wrong email or password"),
            429: REFUSED,
        },
        examples=[CREDENTIALS_EXAMPLE],
    )
    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:  # wrong password, unknown or inactive account
            self.attempt_failed()
            raise


class RefreshApi(TokenRefreshView):
    """Exchange a refresh token for a new pair, only once per token; throttled per address."""

    throttle_classes = [RefreshThrottle]

    @extend_schema_serializer(component_name="TokenRefresh")
    class InputSerializer(TokenRefreshSerializer):
        token_class = RefreshToken

        def validate(self, attrs):
            return user_rotate_refresh_token(refresh=self.token_class(attrs["refresh"]))

    serializer_class = InputSerializer


class LogoutApi(APIView):
    """Blacklist every refresh token of the token's user and revoke their access tokens: they
    are refused from now on and their open sockets close with 4002, on every server process."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="TokenBlacklist")
    class InputSerializer(TokenBlacklistSerializer):
        token_class = RefreshToken

        def validate(self, attrs):
            return {"refresh": self.token_class(attrs["refresh"])}

    def get_authenticate_header(self, request):
        # Without it DRF turns an invalid refresh token's 401 into a 403.
        return 'Bearer realm="api"'

    @extend_schema(
        request=InputSerializer,
        responses={
            204: OpenApiResponse(description="logged out everywhere"),
            401: OpenApiResponse(description="the refresh token is invalid or already used"),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        user_logout(refresh=serializer.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordChangeApi(FailureThrottledMixin, APIView):
    """Change the caller's password; every older token stops working, fresh ones come back."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [PasswordChangeThrottle]

    @extend_schema_serializer(component_name="PasswordChangeInput")
    class InputSerializer(Serializer):
        current_password = serializers.CharField(max_length=128, trim_whitespace=False)
        new_password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: TokenPairSerializer,
            400: OpenApiResponse(description="current password wrong, or new one too weak"),
            429: REFUSED,
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not request.user.check_password(serializer.validated_data["current_password"]):
            self.attempt_failed()
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

    @extend_schema(
        request=None,
        responses={
            200: TokenPairSerializer,
            404: OpenApiResponse(description="DEBUG is off: there is no demo user"),
        },
    )
    def post(self, request):
        try:
            tokens = user_demo_sign_in()
        except DemoUserRefused:
            raise NotFound() from None
        return Response(tokens)
