"""The channel layer through Redis Sentinel, configured the way production is (settings.py
reads REDIS_SENTINELS and REDIS_SENTINEL_MASTER), on both layer kinds."""

import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from notifications.delivery import flush_deliveries
from notifications.events import sample_data
from notifications.publish import apublish_event, publish_event
from tests.conftest import access_token_for
from tests.support.redis import RedisServer, SentinelServer
from tests.support.settings import settings_from_environment
from tests.support.ws import connect, receive_events

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sentinel():
    master = RedisServer().start()
    sentinel = SentinelServer(master).start()
    yield sentinel
    sentinel.stop()
    master.stop()


def layers_from_environment(**env) -> dict:
    """CHANNEL_LAYERS exactly as reasonflow/settings.py builds it from this environment."""
    return settings_from_environment(**env).CHANNEL_LAYERS


@pytest.mark.parametrize("kind", ["core", "pubsub"])
async def test_events_flow_through_a_layer_found_by_sentinel(sentinel, settings, user, kind):
    settings.CHANNEL_LAYERS = layers_from_environment(
        REDIS_URL="",
        REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}",
        REDIS_SENTINEL_MASTER=sentinel.master_name,
        CHANNEL_LAYER=kind,
    )
    assert "sentinels" in settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    comm, _ = await connect(access_token_for(user))
    await apublish_event(user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready"))
    assert [e["id"] for e in await receive_events(comm, 1)] == [1]

    def from_a_worker_thread():
        # No event loop here: the process's sender thread finds the master through Sentinel.
        publish_event(user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready"))
        assert flush_deliveries(timeout=10)
        connection.close()

    worker = threading.Thread(target=from_a_worker_thread)
    worker.start()
    await sync_to_async(worker.join)(30)
    assert [e["id"] for e in await receive_events(comm, 1)] == [2]
    await comm.disconnect()
