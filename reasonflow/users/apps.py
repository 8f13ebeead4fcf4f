"""The custom user model: UUID primary key, email as the login name."""

from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "reasonflow.users"
    label = "users"
    verbose_name = "Users"

    def ready(self) -> None:
        from reasonflow.users import (
            schema,  # noqa: F401 - registers the API schema's JWT scheme
            signals,  # noqa: F401 - connects the receivers
        )
