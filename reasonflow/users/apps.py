"""The custom user model: UUID primary key, email as the login name."""

from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "reasonflow.users"
    label = "users"
    verbose_name = "Users"

    def ready(self) -> None:
        from reasonflow.users import signals  # noqa: F401 - connects the receivers
