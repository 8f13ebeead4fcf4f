import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.support.hangs import database_sessions, report_stuck_test

ROOT = Path(__file__).resolve().parents[2]


async def test_a_report_names_each_thread_and_each_unfinished_task_where_it_waits(tmp_path):
    async def waits_for_ever_on(event: asyncio.Event):
        await event.wait()

    stuck = asyncio.create_task(waits_for_ever_on(asyncio.Event()), name="the-stuck-one")
    await asyncio.sleep(0)
    release = threading.Event()

    def waits_for_a_release():
        release.wait()

    thread = threading.Thread(target=waits_for_a_release, name="the-waiting-thread")
    thread.start()

    class Gone:
        pass

    dead = weakref.proxy(Gone())  # a proxy whose object is gone: the scan must step over it
    read, write = os.pipe()
    try:
        report_stuck_test("tests/x.py::test_y", 200, write, tmp_path, threading.Event())
        os.close(write)
        with os.fdopen(read) as pipe:
            report = pipe.read()
    finally:
        stuck.cancel()
        release.set()
        thread.join()
    assert dead is not None
    assert "tests/x.py::test_y: still running after 200 s" in report
    assert "--- thread the-waiting-thread" in report
    assert "in waits_for_a_release" in report
    assert "the-stuck-one" in report
    assert "in waits_for_ever_on" in report
    (written,) = tmp_path.glob("*.txt")  # the copy the run's summary prints
    assert written.read_text() == report


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_report_shows_who_waits_for_whose_lock():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's sessions and locks")
    settings = connection.settings_dict
    params = {
        "dbname": settings["NAME"],
        "user": settings["USER"] or None,
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
        "password": settings["PASSWORD"] or None,
    }
    with psycopg.connect(**params) as holder, psycopg.connect(**params, autocommit=True) as waiter:
        holding, waiting = holder.info.backend_pid, waiter.info.backend_pid
        holder.execute("LOCK TABLE notifications_event IN ACCESS EXCLUSIVE MODE")
        blocked = threading.Thread(
            target=waiter.execute, args=("SELECT count(*) FROM notifications_event",)
        )
        blocked.start()
        try:
            for _ in range(100):
                if f"[{holding}]" in (report := database_sessions()):
                    break
                threading.Event().wait(0.05)
        finally:
            holder.rollback()
            blocked.join()
    waiting_line = next(line for line in report.splitlines() if line.startswith(f"{waiting} "))
    assert "ours active Lock:relation" in waiting_line
    assert f"[{holding}]" in waiting_line
    assert f"{holding} relation notifications_event AccessExclusiveLock True" in report


def run_pytest(tmp_path, test: str, *args: str) -> subprocess.CompletedProcess:
    """A pytest run of its own on `test`, with this plugin only (no Django)."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(test))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.hangs", "-p", "no:django",
         "-p", "no:cacheprovider", "-q", "test_inner.py", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


SLOW_TEST = """
    import time

    def test_takes_its_time():
        time.sleep(3)
"""


def test_reports_are_printed_in_the_runs_summary_and_a_stuck_test_stops_the_run(tmp_path):
    tests = """
        import time

        def test_slow_but_done():
            time.sleep(1)

        def test_stuck():
            time.sleep(60)

        def test_next():
            pass
    """
    result = run_pytest(
        tmp_path, tests, "-n", "1", "-o", "hang_report_after=0.5", "--timeout=2",
        "--timeout-method=signal",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr  # interrupted
    assert "test_inner.py::test_stuck ran past 0.5 s and failed" in result.stdout
    assert "1 failed, 1 passed" in result.stdout  # test_next never ran
    summary = result.stdout.split("stuck test report (gw0", 1)[1]
    assert "test_inner.py::test_slow_but_done: still running after 0.5 s" in summary
    assert "test_inner.py::test_stuck: still running after 0.5 s" in summary
    assert "in test_stuck" in summary


def test_a_process_the_timeout_cannot_free_ends_with_every_stack(tmp_path):
    result = run_pytest(
        tmp_path, SLOW_TEST.replace("sleep(3)", "sleep(60)"), "-o", "hang_exit_after=1"
    )
    assert result.returncode != 0
    assert "Timeout (0:00:01)!" in result.stderr
    assert "in test_takes_its_time" in result.stderr
