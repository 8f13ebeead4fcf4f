"""A pytest plugin that explains a stuck test where CI's log is read: at its end.

At `hang_report_after` seconds into one test (setup, call and teardown together) it writes
what the process waits on: every thread's stack, every unfinished asyncio task with its own
stack (a thread's stack shows *that* an event loop waits, the task *on what*), and on
PostgreSQL the test database's sessions, what each waits for, which sessions block it and the
locks they hold. The report goes to the stderr the run began with at once, and to a file that
the controlling process (xdist's, when the run has workers) prints in its summary.

pytest-timeout (`timeout_method = "signal"`) then fails the test where it waits, with its
traceback in its report, and the run stops: whatever held that test may hold the next ones as
long. Should the signal not get through (a thread stuck in C code holding the main thread
up), or the process not end, it ends at `hang_exit_after` seconds with every thread's stack
printed: a run always ends.
"""

import asyncio
import faulthandler
import gc
import io
import os
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import pytest

REPORT_AFTER = 200.0  # before pytest-timeout's 300 s
EXIT_AFTER = 360.0


def pytest_addoption(parser):
    parser.addini("hang_report_after", "seconds into a test before it is reported", default="")
    parser.addini("hang_exit_after", "seconds into a test before its process ends", default="")


def pytest_configure(config):
    config.stash[_stderr_key] = os.dup(sys.stderr.fileno())
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[_reports_key] = Path(workerinput["hang_reports"])
    else:
        config.stash[_reports_key] = Path(tempfile.mkdtemp(prefix="pytest-hangs-"))
        config.stash[_owns_reports_key] = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist, on the controlling process: tell each worker where to write its reports."""
    node.workerinput["hang_reports"] = str(node.config.stash[_reports_key])


def pytest_unconfigure(config):
    fd = config.stash.get(_stderr_key, None)
    if fd is not None:
        os.close(fd)
    if config.stash.get(_owns_reports_key, False):
        shutil.rmtree(config.stash[_reports_key], ignore_errors=True)


def _seconds(config, name: str, default: float) -> float:
    value = config.getini(name)
    return float(value) if value else default


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    config = item.config
    fd, reports = config.stash[_stderr_key], config.stash[_reports_key]
    report_after = _seconds(config, "hang_report_after", REPORT_AFTER)
    exit_after = _seconds(config, "hang_exit_after", EXIT_AFTER)
    reported = threading.Event()
    timer = threading.Timer(
        report_after, report_stuck_test, args=(item.nodeid, report_after, fd, reports, reported)
    )
    timer.daemon = True
    timer.start()
    # faulthandler's own thread: it ends the process even while another holds the GIL.
    faulthandler.dump_traceback_later(exit_after, exit=True, file=fd)
    try:
        yield
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
        if reported.is_set() and item.stash.get(_failed_key, False):
            # What held this test may hold every later one as long: stop the run, and end the
            # process should its teardown be held too.
            item.session.shouldstop = f"{item.nodeid} ran past {report_after:g} s and failed"
            faulthandler.dump_traceback_later(exit_after - report_after, exit=True, file=fd)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[_failed_key] = True
    return report


def pytest_terminal_summary(terminalreporter, config):
    if not config.stash.get(_owns_reports_key, False):
        return
    for path in sorted(config.stash[_reports_key].glob("*.txt")):
        terminalreporter.write_sep("=", f"stuck test report ({path.stem})")
        terminalreporter.write(path.read_text(errors="replace"))


def report_stuck_test(
    nodeid: str, after: float, fd: int, reports: Path, reported: threading.Event
) -> None:
    reported.set()
    text = f"\n=== {nodeid}: still running after {after:g} s ===\n"
    text += f"{describe_process()}=== end of the report ===\n"
    os.write(fd, text.encode("utf-8", "replace"))
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(reports / f"{name}-{os.getpid()}.txt", "a", encoding="utf-8") as report:
        report.write(text)


def describe_process() -> str:
    """Every thread's stack, every unfinished asyncio task's, the test database's sessions."""
    out = io.StringIO()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue  # this report's own
        out.write(f"--- thread {names.get(ident, ident)}\n")
        out.write("".join(traceback.format_stack(frame, limit=40)))
    out.write(describe(unfinished_tasks()))
    out.write(database_sessions())
    return out.getvalue()


def unfinished_tasks() -> list[asyncio.Task]:
    """Every task of every event loop in this process that has not finished."""
    # type(), not isinstance(): the latter asks a dead weakref.proxy for its class and raises.
    return [
        obj for obj in gc.get_objects() if issubclass(type(obj), asyncio.Task) and not obj.done()
    ]


def describe(tasks: list[asyncio.Task]) -> str:
    out = io.StringIO()
    for task in tasks:
        out.write(f"--- {task!r}\n")
        task.print_stack(limit=30, file=out)
    return out.getvalue()


SESSIONS = """
SELECT pid, client_port, state, wait_event_type, wait_event, pg_blocking_pids(pid),
       round(extract(epoch FROM now() - xact_start)::numeric, 1),
       left(regexp_replace(query, '\\s+', ' ', 'g'), 300)
FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
ORDER BY pid
"""
LOCKS = """
SELECT l.pid, l.locktype, coalesce(l.relation::regclass::text, ''), l.mode, l.granted
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.datname = current_database() AND l.pid <> pg_backend_pid()
  AND l.locktype NOT IN ('virtualxid', 'transactionid')
ORDER BY l.granted, l.pid
"""


def database_sessions() -> str:
    """On PostgreSQL, the test database's sessions and locks, asked over a connection of its
    own (the test's may be the one stuck); sessions of this process are marked."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    try:
        database = connections["default"]
        if database.vendor != "postgresql":
            return ""
    except ImproperlyConfigured:
        return ""  # a run without Django
    import psycopg

    settings = database.settings_dict
    try:
        with psycopg.connect(
            dbname=settings["NAME"],
            user=settings["USER"] or None,
            password=settings["PASSWORD"] or None,
            host=settings["HOST"] or None,
            port=settings["PORT"] or None,
            connect_timeout=5,
            options="-c statement_timeout=5000",
            autocommit=True,
        ) as connection:
            sessions = connection.execute(SESSIONS).fetchall()
            locks = connection.execute(LOCKS).fetchall()
    except Exception as exc:
        return f"--- database sessions: not read ({exc!r})\n"
    ours = local_tcp_ports()
    out = io.StringIO()
    out.write(f"--- database {settings['NAME']}: pid, ours, state, waits for, blocked by, ")
    out.write("transaction age (s), query\n")
    for pid, port, state, wait_type, wait, blockers, age, query in sessions:
        mine = "ours" if port in ours else "other process"
        out.write(f"{pid} {mine} {state} {wait_type}:{wait} {blockers} {age} {query}\n")
    out.write("--- locks: pid, type, relation, mode, granted\n")
    for row in locks:
        out.write(" ".join(str(value) for value in row) + "\n")
    return out.getvalue()


def local_tcp_ports() -> set[int]:
    """The local ports of this process's TCP sockets (Linux), to tell its sessions apart."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


_stderr_key = pytest.StashKey[int]()
_reports_key = pytest.StashKey[Path]()
_owns_reports_key = pytest.StashKey[bool]()
_failed_key = pytest.StashKey[bool]()
