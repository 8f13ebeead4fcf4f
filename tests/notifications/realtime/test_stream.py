"""EventStream: one connection's ordered stream. Directly, on a transport that records the
frames it is given (the stream's documented seam: `write` and a connection with `closing` and
`close_with`), and through the consumer on every channel layer: in id order, gaps filled from
the store, repeats dropped, replays in batches, 4010 for a client that stops reading."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from prometheus_client import REGISTRY

from notifications.close_codes import CloseCode
from notifications.delivery import aflush_deliveries
from notifications.events import sample_data
from notifications.publish import MESSAGE_TYPE, user_group_name
from notifications.realtime.stream import EventStream
from tests.conftest import access_token_for
from tests.support.ws import connect, group_members, publish, receive_events

pytestmark = pytest.mark.django_db(transaction=True)  # the stream reads the store from threads


class RecordingTransport:
    """A client connection that takes every frame at once, or none while `stalled`."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.closing = False
        self.closed_with: int | None = None
        self.stalled = False

    async def write(self, text: str) -> None:
        if self.stalled:
            await asyncio.Event().wait()
        self.frames.append(json.loads(text))

    async def close_with(self, code: int) -> None:
        self.closing, self.closed_with = True, code

    @property
    def ids(self) -> list[int]:
        return [frame["id"] for frame in self.frames]


def message_of(event) -> dict:
    """The channel-layer message publish_event sends for `event`."""
    return {
        "type": MESSAGE_TYPE,
        "user_id": str(event.user_id),
        "event_id": event.event_id,
        "envelope": event.envelope_json(),
    }


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def transport():
    return RecordingTransport()


@pytest.fixture
def stream(transport, user):
    stream = EventStream(transport, transport.write)
    stream.start(user.id, last_event_id=0)
    return stream


@pytest.mark.usefixtures("memory_layer")
async def test_live_events_are_sent_in_order_and_a_repeat_is_dropped(stream, transport, user):
    first, second = await publish(user), await publish(user)
    for event in (first, second, first, second):
        await stream.deliver(message_of(event))
    assert transport.ids == [1, 2]
    assert transport.frames[0] == first.envelope()
    assert stream.last_event_id == 2


@pytest.mark.usefixtures("memory_layer")
async def test_an_event_that_skips_ahead_follows_the_missing_ones_from_the_store(
    stream, transport, user
):
    events = [await publish(user) for _ in range(4)]
    gap_fills = metric("notify_gap_fills_total")
    await stream.deliver(message_of(events[2]))  # 1 and 2 never came from the layer
    assert transport.ids == [1, 2, 3]
    assert metric("notify_gap_fills_total") == gap_fills + 1
    await stream.deliver(message_of(events[1]))  # late: already sent from the store
    await stream.deliver(message_of(events[3]))
    assert transport.ids == [1, 2, 3, 4]


@pytest.mark.usefixtures("memory_layer")
async def test_replay_sends_every_stored_event_after_the_point_in_batches(
    stream, transport, user, settings
):
    settings.NOTIFICATIONS_REPLAY_BATCH = 2
    events = [await publish(user) for _ in range(5)]
    replays, replayed = metric("notify_replays_total"), metric("notify_replayed_events_total")
    async with stream.lock:
        await stream.replay(after=1)
    assert transport.ids == [2, 3, 4, 5]
    assert metric("notify_replays_total") == replays + 1
    assert metric("notify_replayed_events_total") == replayed + 4
    await stream.deliver(message_of(events[4]))  # the layer's copy of a replayed event
    await stream.deliver(message_of(await publish(user)))
    assert transport.ids == [2, 3, 4, 5, 6]


@pytest.mark.usefixtures("memory_layer")
async def test_catch_up_sends_what_the_layer_lost_after_the_last_event_sent(
    stream, transport, user
):
    first = await publish(user)
    await stream.deliver(message_of(first))
    for _ in range(2):
        await publish(user)  # lost by the layer, and nothing follows
    await stream.catch_up()
    assert transport.ids == [1, 2, 3]


@pytest.mark.usefixtures("memory_layer")
async def test_nothing_is_sent_for_another_user_nor_once_the_connection_closes(
    stream, transport, user, other_user
):
    await stream.deliver(message_of(await publish(other_user)))
    assert transport.frames == []
    transport.closing = True
    await stream.deliver(message_of(await publish(user)))
    await stream.catch_up()
    assert transport.frames == []
    assert stream.last_event_id == 0


@pytest.mark.usefixtures("memory_layer")
async def test_a_client_that_does_not_take_a_frame_in_time_is_closed_4010(
    stream, transport, user, settings
):
    settings.NOTIFICATIONS_SEND_TIMEOUT = 0.1
    transport.stalled = True
    await stream.deliver(message_of(await publish(user)))
    assert transport.closed_with == CloseCode.TOO_SLOW
    assert stream.last_event_id == 0  # not sent: the client resumes from before it


@pytest.mark.usefixtures("memory_layer")
async def test_forward_at_once_writes_only_the_next_event_when_nothing_else_sends(
    stream, transport, user
):
    first, second = await publish(user), await publish(user)
    assert stream.forward_at_once(message_of(second)) is False  # a gap: the ordinary way
    assert stream.forward_at_once({**message_of(first), "type": "other"}) is False
    async with stream.lock:
        assert stream.forward_at_once(message_of(first)) is False  # a send in progress
    assert transport.frames == []
    assert stream.forward_at_once(message_of(first)) is True
    assert (transport.ids, stream.last_event_id) == ([1], 1)
    assert not stream.lock.locked()


async def test_a_blocked_forward_at_once_is_finished_by_its_coroutine_under_the_lock(
    stream, transport, user, memory_layer, settings
):
    settings.NOTIFICATIONS_SEND_TIMEOUT = 0.1
    transport.stalled = True
    finishing = stream.forward_at_once(message_of(await publish(user)))
    assert asyncio.iscoroutine(finishing) and stream.lock.locked()
    await finishing
    assert transport.closed_with == CloseCode.TOO_SLOW
    assert stream.last_event_id == 0
    assert not stream.lock.locked()


# --- through the consumer, on every channel layer ---------------------------------------------


@pytest.mark.usefixtures("channel_layer_kind")
async def test_a_dropped_channel_message_is_filled_from_the_store(user):
    comm, _ = await connect(access_token_for(user))
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 1)] == [1]
    layer = get_channel_layer()
    group = user_group_name(user.id)
    [channel] = await group_members(user.id)
    # Take the socket out of its group so the layer never delivers event 2 to it.
    await layer.group_discard(group, channel)
    assert await group_members(user.id) == set()
    await publish(user)
    await aflush_deliveries()
    await layer.group_add(group, channel)
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 2)] == [2, 3]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.usefixtures("channel_layer_kind")
async def test_a_reordered_or_repeated_channel_message_is_sent_once_in_order(user):
    comm, _ = await connect(access_token_for(user))
    events = [await publish(user) for _ in range(3)]
    assert [e["id"] for e in await receive_events(comm, 3)] == [1, 2, 3]
    layer = get_channel_layer()
    # The layer delivers an old event again (at-least-once): the socket must not repeat it.
    await layer.group_send(
        user_group_name(user.id),
        {
            "type": "notification.event",
            "user_id": str(user.id),
            "event_id": events[1].event_id,
            "envelope": events[1].envelope_json(),
        },
    )
    await publish(user)
    assert [e["id"] for e in await receive_events(comm, 1)] == [4]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.usefixtures("channel_layer_kind")
async def test_replay_of_many_events_arrives_complete_and_in_order(user):
    from notifications.publish import publish_event

    def publish_many():
        for _ in range(1000):
            publish_event(
                user_id=user.id, event_type="draft_ready", data=sample_data("draft_ready")
            )

    await sync_to_async(publish_many)()
    await aflush_deliveries()
    comm, connected = await connect(access_token_for(user), last_event_id=0)
    assert connected["last_event_id"] == 1000
    received = [e["id"] for e in await receive_events(comm, 1000)]
    assert received == list(range(1, 1001))
    await comm.disconnect()
