"""Django's middleware, sync-only: in ASGI mode the chain and the view then run in one thread
hop per request instead of one per middleware method (README, Performance)."""

from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import clickjacking, common, csrf, security


class SecurityMiddleware(security.SecurityMiddleware):
    async_capable = False


class SessionMiddleware(sessions.SessionMiddleware):
    async_capable = False


class CommonMiddleware(common.CommonMiddleware):
    async_capable = False


class CsrfViewMiddleware(csrf.CsrfViewMiddleware):
    async_capable = False


class AuthenticationMiddleware(auth.AuthenticationMiddleware):
    async_capable = False


class MessageMiddleware(messages.MessageMiddleware):
    async_capable = False


class XFrameOptionsMiddleware(clickjacking.XFrameOptionsMiddleware):
    async_capable = False
