"""Publish a test event to a user, as POST /api/v1/notifications/test and the admin action do."""

import json

from django.core.management.base import BaseCommand, CommandError

from notifications.delivery import flush_deliveries
from notifications.events import EventPayloadError, EventType
from notifications.management.commands._users import user_from_option
from notifications.realtime.presence import PresenceUnavailable, presence_count_for_user
from notifications.services import event_send_sample


class Command(BaseCommand):
    help = "Send a test notification event to a user; prints the event envelope as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The user's email or UUID.")
        parser.add_argument("--type", required=True, choices=[t.value for t in EventType])
        parser.add_argument("--data", help="The event's data as a JSON object (default: a sample).")

    def handle(self, *args, user, type, data=None, **options):
        target = user_from_option(user)
        if data is not None:
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise CommandError(f"--data is not valid JSON: {exc}") from None
        try:
            event = event_send_sample(user_id=target.id, event_type=type, data=data)
        except EventPayloadError as exc:
            raise CommandError(str(exc)) from None
        # Hand the live send to the channel layer before the command's process exits.
        flush_deliveries()
        self.stdout.write(event.envelope_json())
        try:
            online = presence_count_for_user(user_id=target.id)
        except PresenceUnavailable:
            online = "unknown (presence store unreachable)"
        self.stderr.write(
            f"Sent {event.type} event #{event.event_id} to {target}; connections online: {online}."
        )
