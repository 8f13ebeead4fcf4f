"""Walk a running server through every event type (`make demo`), printing each REST call and
each event its socket receives.

A client of the server, like a frontend: it signs in (the DEBUG-only one-click demo sign-in,
or --email/--password), follows the user's stream with the Python client, and drives the
emails API: sync, process an email until one gets a draft, approve it, process another and
reject its draft, then a background sync job. It picks its emails from what the mailbox holds
now, so the second and tenth run work as the first. It needs no database of its own.
"""

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request

from django.core.management.base import BaseCommand, CommandError

from notifications.clients.python import AuthenticationFailed, NotificationClient
from notifications.events import EventType

DEFAULT_URL = "http://127.0.0.1:8000"
# Each sync delivers a few of the demo mailbox's messages; spam and notices get no draft, so a
# draft may take several emails (and syncs) to reach.
MAX_SYNCS = 10


class DemoFailed(Exception):
    pass


class Command(BaseCommand):
    help = "Drive a running server through all eight event types and print what arrives."

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", default=DEFAULT_URL, help=f"The server's base URL. Default: {DEFAULT_URL}"
        )
        parser.add_argument(
            "--email", help="Sign in as this user (default: the development demo user)."
        )
        parser.add_argument("--password", help="The password for --email.")
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="Seconds to wait for every event type."
        )

    def handle(self, *args, url, email=None, password=None, timeout, **options):
        if (email is None) != (password is None):
            raise CommandError("--email and --password go together.")
        walkthrough = Walkthrough(
            url.rstrip("/"), email=email, password=password, write=self.stdout.write
        )
        try:
            asyncio.run(walkthrough.run(patience=timeout))
        except (DemoFailed, AuthenticationFailed) as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            self.stderr.write("stopped")


class Walkthrough:
    def __init__(self, base_url: str, *, email: str | None, password: str | None, write) -> None:
        self.base_url = base_url
        self.credentials = None if email is None else {"email": email, "password": password}
        self.write = write
        self.received: dict[str, list[dict]] = {}
        self.arrived = asyncio.Condition()

    async def run(self, *, patience: float) -> None:
        token = await asyncio.to_thread(self.sign_in)
        connected = asyncio.Event()
        client = NotificationClient(
            self.socket_url(),
            lambda: asyncio.to_thread(self.sign_in),
            token=token,
            on_connected=lambda message: connected.set(),
        )
        listening = asyncio.create_task(self.follow(client))
        try:
            await asyncio.wait_for(connected.wait(), 15)
            self.write(f"socket connected to {self.socket_url()}")
            await asyncio.to_thread(self.drive, token)
            await self.wait_for_every_type(patience)
        except TimeoutError:
            missing = sorted(set(EventType) - set(self.received))
            raise DemoFailed(f"no {', '.join(missing)} within {patience:.0f} s") from None
        finally:
            await client.close()
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
        counts = ", ".join(f"{kind} x{len(self.received[kind])}" for kind in EventType)
        self.write(f"all eight event types arrived: {counts}")

    def socket_url(self) -> str:
        scheme = "wss" if self.base_url.startswith("https:") else "ws"
        return f"{scheme}://{self.base_url.split('://', 1)[1]}/api/v1/notifications/ws"

    # --- the socket -------------------------------------------------------------------------

    async def follow(self, client: NotificationClient) -> None:
        async with contextlib.aclosing(client.events()) as events:
            async for event in events:
                self.write(f"  <- #{event['id']} {event['type']} {json.dumps(event['data'])}")
                async with self.arrived:
                    self.received.setdefault(event["type"], []).append(event["data"])
                    self.arrived.notify_all()

    async def wait_for_every_type(self, patience: float) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: set(EventType) <= set(self.received)), patience
            )

    # --- REST (a worker thread: urllib blocks) ----------------------------------------------

    def sign_in(self) -> str:
        if self.credentials is None:
            status, body = self.call("POST", "auth/demo")
            if status == 404:
                raise DemoFailed(
                    "the server has no demo sign-in (DEBUG is off): pass --email and --password"
                )
        else:
            status, body = self.call("POST", "auth/login", body=self.credentials)
        if status != 200:
            raise DemoFailed(f"sign-in failed ({status}): {body}")
        return body["access"]

    def drive(self, token: str) -> None:
        self.call("POST", "emails/sync", token=token, expect=200)
        approved = self.email_with_draft(token)
        self.call("POST", f"drafts/{approved}/approve", token=token, expect=200)
        rejected = self.email_with_draft(token)
        self.call(
            "POST",
            f"drafts/{rejected}/reject",
            token=token,
            body={"reason": "Too formal"},
            expect=200,
        )
        self.call("POST", "emails/batch/sync", token=token, expect=202)

    def email_with_draft(self, token: str) -> str:
        """Process pending emails until one gets a draft (spam is closed without one); sync
        more mail when none is pending. Returns the draft's id."""
        for _ in range(MAX_SYNCS):
            _, page = self.call("GET", "emails/?status=pending&page_size=100", token=token)
            for email in page["results"]:
                status, processed = self.call("POST", f"emails/{email['id']}/process", token=token)
                if status == 200 and processed.get("draft"):
                    return processed["draft"]["id"]
            self.call("POST", "emails/sync", token=token, expect=200)
        raise DemoFailed(f"no email got a draft after {MAX_SYNCS} syncs")

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict | None = None,
        expect: int | None = None,
    ) -> tuple[int, dict | None]:
        request = urllib.request.Request(  # noqa: S310 - a URL the operator gave
            f"{self.base_url}/api/v1/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        self.write(f"-> {method} /api/v1/{path}")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError as exc:
            raise DemoFailed(f"cannot reach {self.base_url}: {exc}") from None
        elapsed = (time.perf_counter() - started) * 1000
        self.write(f"   {status} in {elapsed:.0f} ms")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if expect is not None and status != expect:
            raise DemoFailed(f"{method} /api/v1/{path} answered {status}: {parsed or raw[:200]}")
        return status, parsed
