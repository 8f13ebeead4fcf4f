"""Run the service the quickstart way: migrate, ensure the demo user, print how to connect,
then serve HTTP and WebSocket with daphne."""

import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from reasonflow.users.services import (
    DEMO_EMAIL,
    DEMO_PASSWORD,
    user_ensure_demo,
    user_issue_tokens,
)


class Command(BaseCommand):
    help = "Migrate, create the demo user, print a token and serve with daphne."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-demo", action="store_true", help="Skip the demo user.")

    def handle(self, *args, host, port, no_demo, **options):
        call_command("migrate", interactive=False, verbosity=0)
        ws_url = f"ws://{host}:{port}/api/v1/notifications/ws"
        if not no_demo:
            user = user_ensure_demo()
            tokens = user_issue_tokens(user=user)
            lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
            self.stdout.write(
                "\nReasonFlow Notify\n"
                f"  demo user   {DEMO_EMAIL} / {DEMO_PASSWORD}  (staff; id {user.id})\n"
                f"  WebSocket   {ws_url}\n"
                f"  REST        http://{host}:{port}/api/v1/\n"
                f"  admin       http://{host}:{port}/admin/\n\n"
                f"Access token (valid {lifetime}); send it as the first frame:\n"
                f'{{"token": "{tokens["access"]}"}}\n\n'
            )
        self.stdout.flush()
        os.execv(sys.executable, daphne_argv(host=host, port=port))  # noqa: S606


def daphne_argv(*, host: str, port: int) -> list[str]:
    """The daphne command line this project runs with (also used by the live-server tests)."""
    # daphne's own limit sits above the protocol's 64 KiB so the consumer can answer 4009; a
    # frame beyond it is cut off by daphne itself (1009) before it is buffered in full.
    max_message = str(8 * settings.NOTIFICATIONS_MAX_FRAME_BYTES)
    return [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        host,
        "-p",
        str(port),
        "--websocket-max-message-size",
        max_message,
        "--websocket-max-frame-size",
        max_message,
        "reasonflow.asgi:application",
    ]
