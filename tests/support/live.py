"""A real server on 127.0.0.1 for end-to-end tests, run as a separate process with the project's
own command (`manage.py serve --no-demo`: migrate, then uvicorn as in production)."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.limits import with_open_files
from tests.support.redis import free_port

ROOT = Path(__file__).resolve().parents[2]


# Live tests log in and register many times from 127.0.0.1, counted in a Redis other runs may
# share: like a load rig, they raise the auth throttles (tests/users covers those).
RAISED_THROTTLES = {
    f"THROTTLE_RATE_{name}": "100000/min" for name in ("LOGIN", "REGISTER", "PASSWORD", "REFRESH")
}


class LiveServer:
    """The served application in its own process; `env` overrides the environment.

    The server migrates its own database first: by default a fresh SQLite file, so it shares
    nothing with the test database (talk to it over HTTP and WebSocket only).
    """

    def __init__(
        self,
        env: dict[str, str] | None = None,
        port: int | None = None,
        *,
        demo: bool = False,
        open_files: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.demo = demo  # serve as `make run` does: the demo user when DEBUG is on
        self.open_files = open_files  # the soft open-file limit it starts with (else ours)
        self.db_path = Path(tempfile.mkdtemp(prefix="reasonflow-live-")) / "db.sqlite3"
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **RAISED_THROTTLES,
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.log_path = self.db_path.parent / "server.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/notifications/ws"

    def start(self, timeout: float = 30) -> "LiveServer":
        command = [sys.executable, "manage.py", "serve", *([] if self.demo else ["--no-demo"])]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.open_files is not None:
            command = with_open_files(command, self.open_files)
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1)  # noqa: S310
            except urllib.error.HTTPError:
                return self  # any HTTP answer means the server is up
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{self.log()}") from None
                time.sleep(0.1)
            else:
                return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def notify_server_here():
    """NotifyServer (the production uvicorn config) on 127.0.0.1 in this event loop, serving
    the test database: the test sees its registry, groups and presence. Stopped on exit."""
    from notifications.realtime.server import NotifyServer, server_config
    from tests.support.ws import wait_until

    port = free_port()
    server = NotifyServer(server_config(host="127.0.0.1", port=port))
    server.http_url = f"http://127.0.0.1:{port}"
    server.ws_url = f"ws://127.0.0.1:{port}/api/v1/notifications/ws"
    server.stream_url = f"{server.http_url}/api/v1/notifications/stream"
    serving = asyncio.create_task(server.serve())

    async def started():
        return server.started

    await wait_until(started, timeout=10)
    try:
        yield server
    finally:
        server.should_exit = True
        await serving
