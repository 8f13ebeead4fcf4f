"""A pytest plugin that names the asyncio tasks a stuck test is waiting on.

faulthandler (at 240 s) prints every thread's stack, which shows *that* an event loop waits
(pytest-asyncio closing its runner, a gather of cancelled tasks) but not *on what*. Shortly
before, this prints each unfinished task with its own stack, to the stderr the run began with,
so a hang on CI names its task in the log even when the worker is then killed.
"""

import asyncio
import gc
import io
import os
import sys
import threading

import pytest

REPORT_AFTER = 200.0  # seconds into one test (setup, call, teardown): before faulthandler's 240


def pytest_configure(config):
    config.stash[_stderr_key] = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config):
    fd = config.stash.get(_stderr_key, None)
    if fd is not None:
        os.close(fd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    timer = threading.Timer(
        REPORT_AFTER, report_unfinished_tasks, args=(item.nodeid, item.config.stash[_stderr_key])
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


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


def report_unfinished_tasks(nodeid: str, fd: int) -> None:
    tasks = unfinished_tasks()
    text = f"\n=== {nodeid}: still running after {REPORT_AFTER:.0f} s; {len(tasks)} unfinished "
    text += f"asyncio task(s) ===\n{describe(tasks)}=== end of tasks ===\n"
    os.write(fd, text.encode("utf-8", "replace"))


_stderr_key = pytest.StashKey[int]()
