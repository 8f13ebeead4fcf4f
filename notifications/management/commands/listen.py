"""Watch a user's event stream over a real WebSocket: a wscat that speaks our protocol.

Events go to stdout, one JSON object per line; status lines go to stderr. Reconnects with
backoff and jitter, resuming from the last id; refreshes its token before it expires.
"""

import asyncio
import json
import random

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand, CommandError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from notifications.management.commands._users import user_from_option
from reasonflow.users.services import user_issue_tokens

DEFAULT_URL = "ws://127.0.0.1:8000/api/v1/notifications/ws"
# The contract: never retry these without a new token; we just minted one, so give up.
AUTH_CLOSE_CODES = {4001, 4002}


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
            asyncio.run(self.listen(url=url, last_event_id=last_event_id, count=count))
        except KeyboardInterrupt:
            self.stderr.write("# stopped")

    def status(self, text: str) -> None:
        self.stderr.write(f"# {text}")

    async def token(self) -> str:
        tokens = await sync_to_async(user_issue_tokens)(user=self.user)
        return tokens["access"]

    async def listen(self, *, url: str, last_event_id: int | None, count: int | None) -> None:
        received, failures = 0, 0
        while True:
            try:
                async with connect(url, open_timeout=10, max_size=2**20) as socket:
                    first = {"token": await self.token()}
                    if last_event_id is not None:
                        first["last_event_id"] = last_event_id
                    await socket.send(json.dumps(first))
                    async for text in socket:
                        message = json.loads(text)
                        if isinstance(message.get("id"), int):
                            self.stdout.write(text)
                            self.stdout.flush()
                            last_event_id = message["id"]
                            received += 1
                            if count is not None and received >= count:
                                return
                        elif message.get("type") == "connected":
                            failures = 0
                            if last_event_id is None:
                                last_event_id = message["last_event_id"]
                            self.status(f"connected as {message['user_id']}: {text}")
                        elif message.get("type") == "token_expiring":
                            token = await self.token()
                            await socket.send(json.dumps({"type": "refresh", "token": token}))
                        else:
                            self.status(text)
                    code = socket.close_code
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
            except InvalidURI as exc:
                raise CommandError(str(exc)) from None
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                code = None
                self.status(f"cannot connect: {exc}")
            if code in AUTH_CLOSE_CODES:
                raise CommandError(f"the server refused the token (close {code})")
            failures += 1
            delay = min(30.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0)  # noqa: S311
            self.status(f"disconnected ({code}); reconnecting in {delay:.1f}s")
            await asyncio.sleep(delay)
