"""Run the service: migrate, ensure the demo user, print how to connect, then serve HTTP and
WebSocket with uvicorn (notifications/server.py)."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from notifications.server import serve
from reasonflow.users.services import (
    DEMO_EMAIL,
    DEMO_PASSWORD,
    user_ensure_demo,
    user_issue_tokens,
)


class Command(BaseCommand):
    help = "Migrate, create the demo user, print a token and serve (uvicorn)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-demo", action="store_true", help="Skip the demo user.")
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="Skip migrate (production runs it once per deploy, not per process).",
        )

    def handle(self, *args, host, port, no_demo, no_migrate, **options):
        if not no_migrate:
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
        serve(host=host, port=port)
