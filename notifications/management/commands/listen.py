"""Watch a user's event stream over a real WebSocket: a wscat that speaks our protocol.

Events go to stdout, one JSON object per line; status lines go to stderr. The connection is a
NotificationClient (notifications/clients/python.py): it resumes from the last id, reconnects with
full-jitter backoff, pings, and refreshes its token in-band; this command only mints the tokens
and prints.
"""

import asyncio
import contextlib
import json

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand, CommandError
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from notifications.clients.python import (
    AUTH_CLOSE_CODES,
    AuthenticationFailed,
    NotificationClient,
    StateChange,
)
from notifications.management.commands._users import user_from_option
from reasonflow.users.services import user_issue_tokens

DEFAULT_URL = "ws://127.0.0.1:8000/api/v1/notifications/ws"


class Command(BaseCommand):
    help = "Connect as a user and print each event as one JSON line until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The user's email or UUID.")
        parser.add_argument("--url", default=DEFAULT_URL, help=f"Default: {DEFAULT_URL}")
        parser.add_argument(
            "--last-event-id", type=int, help="Resume after this id (replays kept events)."
        )
        parser.add_argument("--count", type=int, help="Exit after this many events.")

    def handle(self, *args, user, url, last_event_id=None, count=None, **options):
        self.user = user_from_option(user)
        try:
            parse_uri(url)  # the client would retry a malformed URL forever
        except InvalidURI as exc:
            raise CommandError(str(exc)) from None
        try:
            asyncio.run(self.listen(url=url, last_event_id=last_event_id, count=count))
        except KeyboardInterrupt:
            self.stderr.write("# stopped")
        except AuthenticationFailed as exc:
            if exc.close_code is None:
                raise CommandError(str(exc)) from None
            raise CommandError(
                f"the server refused the token (close {exc.close_code}): {exc}"
            ) from None

    def status(self, text: str) -> None:
        self.stderr.write(f"# {text}")

    async def token(self) -> str:
        tokens = await sync_to_async(user_issue_tokens)(user=self.user)
        return tokens["access"]

    def connected(self, message: dict) -> None:
        self.status(f"connected as {message['user_id']}: {json.dumps(message)}")

    def state_changed(self, change: StateChange) -> None:
        if change.state == "reconnecting":
            self.status(f"disconnected ({change.close_code}); reconnecting in {change.delay:.1f}s")
        elif change.state == "connecting" and change.close_code in AUTH_CLOSE_CODES:
            self.status(
                f"the server refused the token (close {change.close_code}); minting a new one"
            )

    async def listen(self, *, url: str, last_event_id: int | None, count: int | None) -> None:
        client = NotificationClient(
            url,
            self.token,
            last_event_id=last_event_id,
            on_state=self.state_changed,
            on_connected=self.connected,
        )
        received = 0
        async with contextlib.aclosing(client.events()) as events:
            async for event in events:
                self.stdout.write(json.dumps(event))
                self.stdout.flush()
                received += 1
                if count is not None and received >= count:
                    await client.close()  # a 1000 close, not a dropped socket
                    break
