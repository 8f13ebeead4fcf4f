import asyncio
import os
import weakref

from tests.support.hangs import report_unfinished_tasks


async def test_a_report_names_each_unfinished_task_and_where_it_waits():
    async def waits_for_ever_on(event: asyncio.Event):
        await event.wait()

    stuck = asyncio.create_task(waits_for_ever_on(asyncio.Event()), name="the-stuck-one")
    await asyncio.sleep(0)

    class Gone:
        pass

    dead = weakref.proxy(Gone())  # a proxy whose object is gone: the scan must step over it
    read, write = os.pipe()
    try:
        report_unfinished_tasks("tests/x.py::test_y", write)
        os.close(write)
        with os.fdopen(read) as pipe:
            report = pipe.read()
    finally:
        stuck.cancel()
    assert dead is not None
    assert "tests/x.py::test_y: still running after" in report
    assert "the-stuck-one" in report
    assert "in waits_for_ever_on" in report
