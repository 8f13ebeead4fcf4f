"""A real IMAP server for the tests: pymap's in-memory backend in a subprocess, reachable with
STARTTLS, and through a small TLS terminator for implicit TLS (imaps), with a self-signed cert."""

import asyncio
import contextlib
import imaplib
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support.redis import free_port

USER, PASSWORD = "alice", "app-password-1"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _wait_for_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            imaplib.IMAP4("127.0.0.1", port, timeout=1).shutdown()
            return
        time.sleep(0.1)
    raise RuntimeError(f"IMAP server on port {port} did not start")


class ImapServer:
    """pymap on two loopback ports: `plain_port` (no TLS, fed by the terminator) and
    `starttls_port`; `ssl_port` terminates implicit TLS in a thread and relays to plain."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="reasonflow-imap-"))
        self.cert, self.key = self_signed_cert(self.dir)
        self.plain_port, self.starttls_port, self.ssl_port = free_port(), free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.loop = asyncio.new_event_loop()

    def _pymap(self, port: int, *tls: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("pymap")),
                "--host", "127.0.0.1", "--port", str(port), *tls,
                "dict", "--demo-user", USER, "--demo-password", PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> "ImapServer":
        self.processes.append(self._pymap(self.plain_port, "--no-tls"))
        self.processes.append(
            self._pymap(self.starttls_port, "--cert", str(self.cert), "--key", str(self.key))
        )
        _wait_for_port(self.plain_port)
        _wait_for_port(self.starttls_port)
        ready = threading.Event()
        threading.Thread(target=self._run_terminator, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def _run_terminator(self, ready: threading.Event) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)

        async def relay(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        async def handle(client_reader, client_writer):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.plain_port)
            await asyncio.gather(
                relay(client_reader, writer), relay(reader, client_writer), return_exceptions=True
            )

        async def serve():
            self.server = await asyncio.start_server(
                handle, "127.0.0.1", self.ssl_port, ssl=context
            )
            ready.set()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    def append(self, raw: bytes, *, port: int | None = None) -> None:
        """Deliver a message into both servers' INBOX (each pymap has its own memory)."""
        for target in (port,) if port else (self.plain_port, self.starttls_port):
            client = imaplib.IMAP4("127.0.0.1", target)
            if target == self.starttls_port:
                client.starttls(ssl_context=ssl.create_default_context(cafile=self.cert))
            client.login(USER, PASSWORD)
            typ, data = client.append("INBOX", None, None, raw)
            assert typ == "OK", data
            client.logout()

    def url(self, *, starttls: bool = False, password: str = PASSWORD) -> str:
        scheme, port = ("imap", self.starttls_port) if starttls else ("imaps", self.ssl_port)
        return f"{scheme}://{USER}:{password}@127.0.0.1:{port}/INBOX?cafile={self.cert}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        for process in self.processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
