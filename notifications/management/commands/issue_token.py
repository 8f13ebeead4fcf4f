"""Mint tokens for a user, for scripts: `TOKEN=$(manage.py issue_token --user ...)`."""

import json

from django.core.management.base import BaseCommand

from notifications.management.commands._users import user_from_option
from reasonflow.users.services import user_issue_tokens


class Command(BaseCommand):
    help = "Print a fresh access token for a user (--json: the access and refresh pair)."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The user's email or UUID.")
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help='Print {"access", "refresh"}.'
        )

    def handle(self, *args, user, as_json=False, **options):
        tokens = user_issue_tokens(user=user_from_option(user))
        self.stdout.write(json.dumps(tokens) if as_json else tokens["access"])
