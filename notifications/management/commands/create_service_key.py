"""Create a service key for the publish API; its secret is printed once, on stdout."""

from django.core.management.base import BaseCommand, CommandError

from notifications.events import EventPayloadError
from notifications.services import service_key_create


class Command(BaseCommand):
    help = (
        "Create a service key for POST /api/v1/notifications/publish and print it on stdout "
        "(it is stored hashed: this is the only time it is shown)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who uses it, e.g. the service's name.")
        parser.add_argument(
            "--types",
            default="",
            help="Comma-separated event types it may publish (default: every type).",
        )

    def handle(self, *args, name, types, **options):
        if not name.strip():
            raise CommandError("--name must not be empty.")
        event_types = [t.strip() for t in types.split(",") if t.strip()]
        try:
            key, secret = service_key_create(name=name.strip(), event_types=event_types)
        except EventPayloadError as exc:
            raise CommandError(f"--types: {exc}") from None
        self.stdout.write(secret)
        allowed = ", ".join(key.event_types) or "every event type"
        self.stderr.write(
            f"Created service key {key.prefix}… ({key.name}) for {allowed}. "
            "It is not stored in clear: keep it now."
        )
