"""Run the service: migrate, ensure the demo user (DEBUG only), print how to connect, then serve
HTTP and WebSocket with uvicorn (notifications/realtime/server.py)."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from notifications.realtime.server import PortUnavailable, listening_socket, serve
from reasonflow.users.services import (
    DEMO_EMAIL,
    DEMO_PASSWORD,
    user_ensure_demo,
    user_issue_tokens,
)


class Command(BaseCommand):
    help = (
        "Migrate, then serve HTTP and WebSocket (uvicorn). With DEBUG on (the embedded "
        "development default) also create the demo user and print a token for it; with DEBUG "
        "off no demo user is ever created or touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on.")
        parser.add_argument("--no-demo", action="store_true", help="Skip the demo user.")
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="Skip migrate (production runs it once per deploy, not per process).",
        )

    def handle(self, *args, host, port, no_demo, no_migrate, **options):
        try:
            sock = listening_socket(host=host, port=port)
        except PortUnavailable as exc:
            raise CommandError(
                f"{exc}. Choose another port: `make run PORT=8001` or `serve --port 8001`."
            ) from None
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        if settings.DEBUG and not no_demo:
            self._print_demo_banner(host, port)
        elif settings.DEBUG:
            self.stdout.write(f"\nReasonFlow Notify (development mode) on http://{host}:{port}/\n")
        self.stdout.flush()
        serve(host=host, port=port, sock=sock)

    def _print_demo_banner(self, host: str, port: int) -> None:
        user = user_ensure_demo()
        tokens = user_issue_tokens(user=user)
        lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
        self.stdout.write(
            "\nReasonFlow Notify, development mode (DEBUG on: never expose this server)\n"
            f"  demo user   {DEMO_EMAIL} / {DEMO_PASSWORD}  (superuser; id {user.id})\n"
            f"  console     http://{host}:{port}/\n"
            f"  WebSocket   ws://{host}:{port}/api/v1/notifications/ws\n"
            f"  REST        http://{host}:{port}/api/v1/\n"
            f"  admin       http://{host}:{port}/admin/\n\n"
            f"Access token (valid {lifetime}); send it as the first frame:\n"
            f'{{"token": "{tokens["access"]}"}}\n\n'
        )
