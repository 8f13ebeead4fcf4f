import pytest
from asgiref.sync import sync_to_async

from bench import loadgen
from tests.conftest import access_token_for
from tests.support.live import notify_server_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_per_address_limits(settings):
    """As the benchmark's servers run: its load comes from a few addresses, not a crowd."""
    settings.NOTIFICATIONS_MAX_PENDING_PER_IP = 0
    settings.NOTIFICATIONS_CONNECT_RATE_PER_IP = 0


async def open_to_a_server(make_user, **kwargs) -> tuple[int, int, set[str]]:
    """130 sockets of 10 users to the production server here: (opened, failed, the source
    addresses they came from)."""
    users = [await sync_to_async(make_user)() for _ in range(10)]
    credentials = [(str(user.id), access_token_for(user)) for user in users] * 13
    async with notify_server_here() as server:
        sockets, failed, _ = await loadgen.open_sockets(
            server.ws_url, credentials, concurrency=50, **kwargs
        )
        try:
            sources = {sock.transport.get_extra_info("sockname")[0] for sock in sockets}
        finally:
            loadgen.close_sockets(sockets)
    return len(sockets), failed, sources


async def test_more_sockets_than_a_source_address_holds_come_from_as_many_as_they_need(
    make_user, memory_layer
):
    if not loadgen.source_addresses(130, per_source=20):
        pytest.skip("this system has only 127.0.0.1 for a source address")
    opened, failed, sources = await open_to_a_server(make_user, per_source=20)
    assert (opened, failed) == (130, 0)  # every one authenticated
    assert sources == set(loadgen.LOOPBACK_SOURCES[:7])  # 130 / 20 per address


async def test_sockets_one_source_address_holds_come_from_the_systems_choice(
    make_user, memory_layer
):
    opened, failed, sources = await open_to_a_server(make_user)
    assert (opened, failed, sources) == (130, 0, {"127.0.0.1"})


def test_more_sockets_than_the_source_addresses_hold_are_an_error():
    per_source = 10
    assert loadgen.source_addresses(per_source, per_source) == ()
    with pytest.raises(ValueError, match="need 256 source addresses"):
        loadgen.source_addresses(per_source * 255 + 1, per_source)
