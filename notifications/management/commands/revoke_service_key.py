"""Revoke a service key: its next request to the publish API is refused (401)."""

from django.core.management.base import BaseCommand, CommandError

from notifications.models import ServiceKey
from notifications.services import service_key_revoke


class Command(BaseCommand):
    help = "Revoke a service key, named by its prefix (rfk_xxxxxxxx, as listed) or whole key."

    def add_arguments(self, parser):
        parser.add_argument("key", help="The key's prefix (its first 12 characters) or the key.")

    def handle(self, *args, key, **options):
        found = ServiceKey.objects.filter(prefix=key.strip()[:12]).first()
        if found is None:
            raise CommandError(f"No service key with prefix {key.strip()[:12]!r}.")
        if service_key_revoke(key=found):
            self.stdout.write(f"Revoked {found}.")
        else:
            self.stdout.write(f"{found} was already revoked.")
