"""The custom user model: UUID primary key, email as the login name."""

from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "reasonflow.users"
    label = "users"
    verbose_name = "Users"
