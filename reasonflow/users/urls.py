"""/api/v1/auth/ routes."""

from django.urls import re_path
from rest_framework_simplejwt.views import (
    TokenBlacklistView,
    TokenObtainPairView,
    TokenRefreshView,
)

from reasonflow.users.apis import RegisterApi

urlpatterns = [
    re_path(r"^register/?$", RegisterApi.as_view(), name="auth-register"),
    re_path(r"^login/?$", TokenObtainPairView.as_view(), name="auth-login"),
    re_path(r"^refresh/?$", TokenRefreshView.as_view(), name="auth-refresh"),
    re_path(r"^logout/?$", TokenBlacklistView.as_view(), name="auth-logout"),
]
