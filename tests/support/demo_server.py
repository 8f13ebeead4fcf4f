"""A live server with the demo (staff) user that a test can stop, restart on the same port and
database, and publish into while it is down: what client tests need for "server-side
disconnect, then resume". Also a line-protocol launcher for the Node tests:

    python -m tests.support.demo_server
    -> {"http_url": ..., "ws_url": ..., "email": ..., "password": ...}
    <- {"cmd": "stop" | "start" | "restart" | "publish", ...}   (one JSON object per line)
    -> {"ok": true, ...}                                        (one reply per command)

End of input stops the server.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.live import ROOT, LiveServer

DEMO_EMAIL = "demo@reasonflow.local"
# The demo user of reasonflow/users/services.py (not imported: the launcher runs without Django).
DEMO_PASSWORD = "reasonflow-demo-2026"


def api(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: dict | None = None,
    timeout: float = 15,
) -> tuple[int, dict | list | None]:
    """One JSON request to the live server: (status, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the local live server's
        f"{base_url}/api/v1/{path}", data=data, method=method
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


class DemoServer:
    """A LiveServer (fresh SQLite database) whose demo user exists; restartable in place."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.extra_env = dict(env or {})
        self.server = LiveServer(env=self.extra_env)
        self.port = self.server.port
        self.database_url = self.server.env["DATABASE_URL"]

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def start(self) -> "DemoServer":
        self.server.start()
        self.run_django(
            "from reasonflow.users.services import user_ensure_demo; user_ensure_demo()"
        )
        return self

    @property
    def running(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        """Start a new server process on the same port and database (after stop())."""
        self.server = LiveServer(
            env={**self.extra_env, "DATABASE_URL": self.database_url}, port=self.port
        )
        self.server.start()

    def restart(self) -> None:
        """Every open socket is closed by the server going away; then serve again."""
        self.stop()
        self.start_again()

    def log(self) -> str:
        return self.server.log()

    def run_django(self, code: str) -> str:
        """Run Python with Django set up on this server's database; return its stdout."""
        env = {**self.server.env, "DJANGO_SETTINGS_MODULE": "reasonflow.settings"}
        result = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup()\n{code}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"django snippet failed:\n{result.stderr}")
        return result.stdout

    def publish_direct(self, *, email: str, event_type: str, count: int = 1) -> list[int]:
        """Publish `count` sample events to `email` from another process, straight into the
        database (works while the server is down); return their ids."""
        out = self.run_django(
            "from notifications.services import event_send_sample\n"
            "from reasonflow.users.selectors import user_get_by_identifier\n"
            f"user = user_get_by_identifier(identifier={email!r})\n"
            f"ids = [event_send_sample(user_id=user.id, event_type={event_type!r}).event_id"
            f" for _ in range({int(count)})]\n"
            "print(' '.join(map(str, ids)))"
        )
        return [int(part) for part in out.split()]

    def issue_tokens(self, email: str = DEMO_EMAIL) -> dict:
        """A token pair minted in another process on this server's database (no REST call,
        so it works while the login's throttle store, Redis, is unreachable)."""
        return json.loads(
            self.run_django(
                "import json\n"
                "from reasonflow.users.selectors import user_get_by_identifier\n"
                "from reasonflow.users.services import user_issue_tokens\n"
                f"user = user_get_by_identifier(identifier={email!r})\n"
                "print(json.dumps(user_issue_tokens(user=user)))"
            )
        )

    def login(self, email: str = DEMO_EMAIL, password: str = DEMO_PASSWORD) -> dict:
        status, body = api(
            self.http_url, "POST", "auth/login", body={"email": email, "password": password}
        )
        if status != 200:
            raise RuntimeError(f"login failed: {status} {body}")
        return body

    def register(self, email: str, password: str = "live-client-password-7731") -> dict:  # noqa: S107
        status, body = api(
            self.http_url, "POST", "auth/register", body={"email": email, "password": password}
        )
        if status != 201:
            raise RuntimeError(f"register failed: {status} {body}")
        return body

    def send_test_event(self, *, staff_token: str, user: str, event_type: str) -> dict:
        """POST notifications/test (staff): publish a sample event through the live server."""
        status, body = api(
            self.http_url,
            "POST",
            "notifications/test",
            token=staff_token,
            body={"user": user, "type": event_type},
        )
        if status != 201:
            raise RuntimeError(f"test event failed: {status} {body}")
        return body["event"]

    def __enter__(self) -> "DemoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve_commands(server: DemoServer, lines, out) -> None:
    def reply(**payload) -> None:
        out.write(json.dumps(payload) + "\n")
        out.flush()

    reply(
        http_url=server.http_url,
        ws_url=server.ws_url,
        email=DEMO_EMAIL,
        password=DEMO_PASSWORD,
    )
    for line in lines:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            name = command["cmd"]
            if name == "stop":
                server.stop()
                reply(ok=True)
            elif name == "start":
                server.start_again()
                reply(ok=True)
            elif name == "restart":
                server.restart()
                reply(ok=True)
            elif name == "publish":
                ids = server.publish_direct(
                    email=command["email"],
                    event_type=command.get("type", "email_received"),
                    count=command.get("count", 1),
                )
                reply(ok=True, ids=ids)
            else:
                reply(ok=False, error=f"unknown command {name!r}")
        except Exception as exc:  # the launcher must answer every line, whatever went wrong
            reply(ok=False, error=f"{type(exc).__name__}: {exc}")


def main() -> None:
    os.chdir(Path(ROOT))
    server = DemoServer(env={"LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING")})
    server.start()
    try:
        _serve_commands(server, sys.stdin, sys.stdout)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
