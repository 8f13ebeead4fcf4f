"""reasonflow/middleware.py: a finished request is freed by reference counting, under the
production server, instead of waiting in reference cycles for the cyclic collector."""

import asyncio
import gc
import json

import pytest

from bench.rest import HttpClient
from tests.conftest import access_token_for
from tests.emails.factories import EmailFactory
from tests.support.live import notify_server_here

PAGE = 50


@pytest.fixture
def reader(transactional_db, make_user):
    """A user with a page and a half of emails, and a token."""
    user = make_user()
    EmailFactory.create_batch(PAGE + PAGE // 2, owner=user)
    return access_token_for(user)


async def get(client: HttpClient, path: str, token: str) -> tuple[int, dict]:
    """GET on the client's keep-alive connection (raw streams: the client side makes no
    garbage of its own to count)."""
    status, body = await client.request("GET", path, token)
    return status, json.loads(body)


async def test_a_finished_request_leaves_its_page_to_reference_counting(reader):
    from emails.models import Email

    async with notify_server_here() as server:
        client = HttpClient(server.config.port)
        status, page = await get(client, f"/api/v1/emails/?page_size={PAGE}", reader)
        assert status == 200 and len(page["results"]) == PAGE
        detail = f"/api/v1/emails/{page['results'][0]['id']}"
        assert (await get(client, detail, reader))[0] == 200
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                for path in (f"/api/v1/emails/?page_size={PAGE}", detail):
                    assert (await get(client, path, reader))[0] == 200
            await asyncio.sleep(0.2)  # the last request's thread and task finish
            gc.collect()
            left = list(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        client.close()
    # Before: every page's 50 emails (with their rows, serializers, the request and the
    # response) waited for the collector, about 500 objects a request. What is left is small
    # and bounded: a filter serializer's fields, the request thread's database wrapper.
    assert not [obj for obj in left if isinstance(obj, Email)]
    assert len(left) < 10 * 60, sorted({type(obj).__name__ for obj in left})
