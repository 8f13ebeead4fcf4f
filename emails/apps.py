"""The email domain that produces notification events."""

from django.apps import AppConfig


class EmailsConfig(AppConfig):
    name = "emails"
    verbose_name = "Emails"

    def ready(self) -> None:
        from emails import signals

        signals.connect()
