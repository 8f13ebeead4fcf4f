import pytest
from asgiref.sync import sync_to_async

from bench import loadgen
from tests.conftest import access_token_for
from tests.support.live import notify_server_here

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sockets_to_a_loopback_server_are_spread_over_its_source_addresses(
    make_user, memory_layer
):
    if not loadgen.loopback_sources():
        pytest.skip("this system has only 127.0.0.1 for a source address")
    users = [await sync_to_async(make_user)() for _ in range(10)]
    credentials = [(str(user.id), access_token_for(user)) for user in users] * 13
    async with notify_server_here() as server:
        sockets, failed, _ = await loadgen.open_sockets(server.ws_url, credentials, concurrency=50)
        try:
            sources = {sock.transport.get_extra_info("sockname")[0] for sock in sockets}
        finally:
            loadgen.close_sockets(sockets)
    assert (len(sockets), failed) == (130, 0)  # every one authenticated
    assert sources == set(loadgen.LOOPBACK_SOURCES)
