"""Delete stored events older than NOTIFICATIONS_RETENTION, and publish receipts past their
24 hours."""

from datetime import timedelta

from django.core.management.base import BaseCommand

from notifications.services import event_prune, publish_receipt_prune


class Command(BaseCommand):
    help = "Delete notification events older than NOTIFICATIONS_RETENTION (or --older-than)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than-seconds",
            type=int,
            help="Override the retention for this run (seconds).",
        )

    def handle(self, *args, older_than_seconds=None, **options):
        older_than = None if older_than_seconds is None else timedelta(seconds=older_than_seconds)
        deleted = event_prune(older_than=older_than)
        self.stdout.write(f"Deleted {deleted} event(s).")
        receipts = publish_receipt_prune()
        self.stdout.write(f"Deleted {receipts} publish receipt(s) past 24 hours.")
