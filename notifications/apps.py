"""The real-time notification service; it knows nothing of emails."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from notifications import schema  # noqa: F401 - registers the service-key scheme
        from notifications.operations import checks  # noqa: F401 - registers the system checks
