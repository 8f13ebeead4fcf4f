"""What a benchmark run stands on: a throwaway PostgreSQL database, a private Redis, the server
processes under test (ours, ours at an earlier revision, the stock Channels consumer, the
bare-websockets floor), CPU pinning and the /proc and INFO readings of their CPU and memory."""

import contextlib
import gc
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from notifications.realtime.open_files import raise_open_file_limit
from tests.support.redis import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The baseline: the server on one core, everything that loads it on the other.
SERVER_CPU = 0
# The target that runs our server but reads it over server-sent events (PROTOCOL §5).
SSE = "sse"
LOAD_CPU = 1


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def collect_garbage_now_only() -> None:
    """Collect now and not again until the next call.

    A load process paused by a full collection (50-260 ms seen with Django loaded) delays the
    receipt or the commit it was in the middle of, and that pause shows up as server latency
    the server never caused. The load generator and the publishers call this between steps.
    """
    gc.collect()
    gc.disable()


def pin(cpu: int | None) -> None:
    """Pin the calling process to one CPU; with None, let it run on any.

    Always sets the affinity: a child inherits its parent's, and a server started by the
    pinned load generator once ran on the load generator's core instead of its own.
    No-op on a single-CPU machine.
    """
    machine = os.cpu_count() or 1
    if machine < 2:
        return
    with contextlib.suppress(OSError):  # a CPU this container may not use: stay put
        os.sched_setaffinity(0, {cpu} if cpu is not None and cpu < machine else range(machine))


# --- PostgreSQL --------------------------------------------------------------------------------


class ThrowawayDatabase:
    """reasonflow_bench_<pid><suffix> on the local PostgreSQL (trust auth), dropped on drop()."""

    def __init__(self, admin_url: str = POSTGRES_ADMIN_URL, suffix: str = "") -> None:
        self.admin_url = admin_url.rstrip("/")
        self.name = f"reasonflow_bench_{os.getpid()}{suffix}"
        self.created = False

    @property
    def url(self) -> str:
        return f"{self.admin_url}/{self.name}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(f"{self.admin_url}/postgres", autocommit=True, connect_timeout=5)

    def create(self) -> "ThrowawayDatabase":
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        return self

    def drop(self) -> None:
        if not self.created:
            return
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False


def production_environment(*, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment every process of a run shares: production settings (DEBUG off, a fresh
    signing key, production's logging) on the run's database and Redis."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "reasonflow.settings",
        # Production runs without DEBUG (which would also keep every SQL query in memory).
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        # As production logs (.env.example): INFO, one JSON object per line; every server
        # under test logs the same way.
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def setup_django(env: dict[str, str]) -> None:
    """Set up Django in this process on `env` and migrate the run's database."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


# --- an earlier revision of the project ------------------------------------------------------


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """The repository at `revision` in a detached worktree of its own, removed on exit, an
    exception or Ctrl-C included. Nothing is written to the repository but the worktree."""
    path = Path(tempfile.mkdtemp(prefix="reasonflow-before-"))
    try:
        added = _git("worktree", "add", "--detach", str(path), revision)
        if added.returncode:
            raise RuntimeError(f"git worktree add {revision}: {added.stderr.strip()}")
        yield path
    finally:
        # Twice forced: `add` locks the worktree until it is done, so one interrupted half-way
        # needs it. The directory may be left when `add` never registered it.
        _git("worktree", "remove", "--force", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)


class EarlierRevision:
    """The project at an earlier commit, served exactly as ours is (`ours@REV`): its own
    checkout, publishers and manage.py, and a database its own migrations made, since the
    schema may differ from this revision's. Holds copies of the run's users, so one token
    opens a socket on either revision."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        self.db = ThrowawayDatabase(suffix="_before")
        self.root: Path | None = None
        self.commit = ""
        self._cleanup = contextlib.ExitStack()

    def setup(self, env: dict[str, str]) -> "EarlierRevision":
        resolved = _git("rev-parse", "--verify", f"{self.revision}^{{commit}}")
        if resolved.returncode:
            raise RuntimeError(f"no such revision: {self.revision}")
        self.commit = resolved.stdout.strip()
        self.root = self._cleanup.enter_context(checkout(self.commit))
        self._cleanup.callback(self.db.drop)
        self.db.create()
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "--verbosity", "0"],
            cwd=self.root,
            env={**env, "DATABASE_URL": self.db.url},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if migrated.returncode:
            raise RuntimeError(f"migrate at {self.revision}:\n{migrated.stderr[-3000:]}")
        return self

    def copy_users(self, source_url: str, table: str) -> None:
        """Copy every row of the users table from `source_url`, in the columns this
        revision's table has (ids, password hashes and token versions included)."""
        with psycopg.connect(source_url) as source, psycopg.connect(self.db.url) as target:
            columns = [
                name
                for (name,) in target.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = %s ORDER BY ordinal_position",
                    [table],
                )
            ]
            listed = ", ".join(f'"{name}"' for name in columns)
            with (
                source.cursor().copy(f'COPY "{table}" ({listed}) TO STDOUT') as rows,
                target.cursor().copy(f'COPY "{table}" ({listed}) FROM STDIN') as into,
            ):
                for chunk in rows:
                    into.write(chunk)

    def close(self) -> None:
        self._cleanup.close()


# --- /proc and Redis readings --------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    at: float
    cpu: float  # seconds of user + system time, every thread of the process
    rss: int  # bytes


def sample_process(pid: int) -> ProcessSample:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        # The command name may hold spaces: split after its closing parenthesis.
        fields = stat.read().rsplit(b")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    return ProcessSample(at=time.monotonic(), cpu=(utime + stime) / CLOCK_TICKS, rss=rss)


def redis_cpu(url: str) -> float:
    """Seconds of CPU the Redis server has used (INFO cpu: user + sys, all its threads)."""
    info = redis.Redis.from_url(url, socket_timeout=5).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def postgres_cpu() -> float | None:
    """Seconds of CPU every PostgreSQL process on this machine has used, backends that have
    exited included (they are in the postmaster's reaped-children times); None when no
    PostgreSQL runs here. The benchmark runs alone: every query on the machine counts."""
    processes = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue  # gone meanwhile
        if raw[raw.index(b"(") + 1 : raw.rindex(b")")] != b"postgres":
            continue
        fields = raw.rsplit(b")", 1)[1].split()
        processes[int(entry.name)] = (int(fields[1]), [int(value) for value in fields[11:15]])
    if not processes:
        return None
    ticks = 0
    for parent, (utime, stime, children_utime, children_stime) in processes.values():
        ticks += utime + stime
        if parent not in processes:  # a postmaster: its backends' times once they exit
            ticks += children_utime + children_stime
    return ticks / CLOCK_TICKS


def private_redis() -> RedisServer:
    """A redis-server of our own on a free port, so nothing else on the machine loads it."""
    return RedisServer().start()


# --- server processes ----------------------------------------------------------------------


def _child_setup(cpu: int | None):
    def setup() -> None:
        pin(cpu)
        raise_open_file_limit()

    return setup


class ServerProcess:
    """One server under test, started in its own session on 127.0.0.1, pinned to SERVER_CPU.

    `kind` is "ours" (`manage.py serve`, exactly as in production; "sse" is the same server
    read over server-sent events), "ours@REV" (the same, in
    the checkout of an earlier revision at `root`), "stock" (bench/stock.py) or "floor"
    (bench/floor.py).
    """

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path, root: Path = ROOT) -> None:
        self.kind = kind
        self.port = free_port()
        self.env = env
        self.root = root
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/notifications/ws"

    @property
    def stream_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/notifications/stream"

    def command(self) -> list[str]:
        port = ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.kind.partition("@")[0] in ("ours", SSE):
            return [sys.executable, "manage.py", "serve", "--no-demo", *port]
        return [sys.executable, "-m", f"bench.{self.kind}", *port]

    def start(self, timeout: float = 60) -> "ServerProcess":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(SERVER_CPU),
            )
        deadline = time.monotonic() + timeout
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} server did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def sample(self) -> ProcessSample:
        return sample_process(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 8) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
