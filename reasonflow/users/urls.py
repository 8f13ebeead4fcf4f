"""/api/v1/auth/ routes."""

from django.urls import re_path

from reasonflow.users.apis import (
    DemoSignInApi,
    LoginApi,
    LogoutApi,
    PasswordChangeApi,
    RefreshApi,
    RegisterApi,
)

urlpatterns = [
    re_path(r"^register/?$", RegisterApi.as_view(), name="auth-register"),
    re_path(r"^login/?$", LoginApi.as_view(), name="auth-login"),
    re_path(r"^refresh/?$", RefreshApi.as_view(), name="auth-refresh"),
    re_path(r"^logout/?$", LogoutApi.as_view(), name="auth-logout"),
    re_path(r"^password/?$", PasswordChangeApi.as_view(), name="auth-password"),
    re_path(r"^demo/?$", DemoSignInApi.as_view(), name="auth-demo"),
]
