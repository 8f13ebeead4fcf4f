"""POST /api/v1/notifications/publish (PROTOCOL §6) through the real endpoint: service keys,
batches, idempotency keys, every error; concurrency on PostgreSQL."""

import json
import random
import threading
import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from notifications.events import sample_data
from notifications.models import Event, EventCounter, PublishReceipt, ServiceKey
from notifications.services import service_key_create, service_key_revoke
from tests.conftest import access_token_for
from tests.support.ws import connect, receive_events

URL = "/api/v1/notifications/publish"


def event_for(user, event_type="draft_ready", **data):
    return {"user": str(user.id), "type": event_type, "data": {**sample_data(event_type), **data}}


def client_with(secret: str | None) -> APIClient:
    client = APIClient()
    if secret is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def post(client: APIClient, body, **headers):
    return client.post(URL, json.dumps(body), content_type="application/json", **headers)


@pytest.fixture
def service_secret(db):
    _, secret = service_key_create(name="classifier")
    return secret


@pytest.fixture
def service(service_secret):
    return client_with(service_secret)


def stored(user) -> list[tuple[int, str]]:
    return list(
        Event.objects.filter(user=user).order_by("event_id").values_list("event_id", "type")
    )


# --- publishing ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_event_by_email_is_stored_and_answered_with_its_envelope(service, user):
    body = {
        "user": user.email.upper(),
        "type": "email_received",
        "data": sample_data("email_received"),
    }

    response = post(service, body)

    assert response.status_code == 201, response.json()
    [envelope] = response.json()["events"]
    assert envelope == Event.objects.get(user=user).envelope()
    assert envelope["id"] == 1 and envelope["type"] == "email_received"
    assert envelope["data"] == body["data"] and envelope["user_id"] == str(user.id)


@pytest.mark.django_db
def test_a_batch_is_published_in_the_order_given_numbered_per_user(service, user, other_user):
    batch = [
        event_for(other_user, "email_received"),
        event_for(user, "draft_ready"),
        event_for(other_user, "draft_approved"),
        {**event_for(user, "email_sent"), "user": user.email},
    ]

    response = post(service, {"events": batch})

    assert response.status_code == 201, response.json()
    envelopes = response.json()["events"]
    assert [(e["user_id"], e["type"], e["id"]) for e in envelopes] == [
        (str(other_user.id), "email_received", 1),
        (str(user.id), "draft_ready", 1),
        (str(other_user.id), "draft_approved", 2),
        (str(user.id), "email_sent", 2),
    ]
    assert [e["data"] for e in envelopes] == [e["data"] for e in batch]
    assert stored(user) == [(1, "draft_ready"), (2, "email_sent")]
    assert envelopes[3] == Event.objects.get(user=user, event_id=2).envelope()


@pytest.mark.django_db
def test_a_batch_whose_third_event_is_invalid_stores_nothing(service, user, other_user):
    batch = [event_for(user), event_for(other_user), event_for(user, "email_sent")]
    del batch[2]["data"]["draft_id"]

    response = post(service, {"events": batch})

    assert response.status_code == 400
    assert list(response.json()) == ["events"]
    [message] = response.json()["events"]["2"]["data"]
    assert "missing keys ['draft_id']" in message
    assert not Event.objects.exists() and not EventCounter.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "email_deleted"}, "type"),
        ({"user": "nobody@example.com"}, "user"),
        ({"user": str(uuid.uuid4())}, "user"),
        ({"data": {"email_id": "not-a-uuid", "draft_id": str(uuid.uuid4())}}, "data"),
        ({"data": ["a list"]}, "data"),
        ({"user": None}, "user"),
    ],
)
def test_a_bad_event_in_a_batch_is_named_by_its_index_and_field(service, user, change, field):
    batch = [event_for(user, "email_sent"), {**event_for(user, "email_sent"), **change}]

    response = post(service, {"events": batch})

    assert response.status_code == 400
    assert list(response.json()["events"]) == ["1"]
    assert list(response.json()["events"]["1"]) == [field]
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_a_bad_single_event_names_its_field_at_the_top(service, user):
    response = post(service, {"user": user.email, "type": "draft_ready"})

    assert response.status_code == 400
    assert response.json() == {"data": ["This field is required."]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"events": []}, {"events": ["Ensure this field has at least 1 elements."]}),
        ({"events": "many"}, {"events": ['Expected a list of items but got type "str".']}),
        (
            {"events": [1]},
            {
                "events": {
                    "0": {"non_field_errors": ["Invalid data. Expected a dictionary, but got int."]}
                }
            },
        ),
    ],
)
def test_a_malformed_batch_is_400(service, body, expected):
    response = post(service, body)

    assert response.status_code == 400
    assert response.json() == expected


# --- service keys ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer rfk_unknownunknownunknownunknownunknownunknown",
        "Bearer rfk_",
        "Bearer",
        "Token abc",
        "Bearer " + "rfk_" + "x" * 5000,
    ],
)
def test_no_or_an_unknown_key_is_401_json(authorization, user):
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = post(client, event_for(user))

    assert response.status_code == 401
    assert "detail" in response.json()
    assert response["WWW-Authenticate"] == 'Bearer realm="service key"'
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_a_users_access_token_is_not_a_service_key(staff_user, user):
    response = post(client_with(access_token_for(staff_user)), event_for(user))

    assert response.status_code == 401
    assert response.json() == {"detail": "Unknown service key."}


@pytest.mark.django_db
def test_a_revoked_key_is_refused_at_once(service, service_secret, user):
    assert post(service, event_for(user)).status_code == 201
    service_key_revoke(key=ServiceKey.objects.get())

    response = post(service, event_for(user))

    assert response.status_code == 401
    assert response.json() == {"detail": "This service key has been revoked."}
    assert stored(user) == [(1, "draft_ready")]


@pytest.mark.django_db
def test_a_key_with_its_secret_changed_by_one_character_is_unknown(service_secret, user):
    forged = service_secret[:-1] + ("A" if service_secret[-1] != "A" else "B")

    assert post(client_with(forged), event_for(user)).status_code == 401


@pytest.mark.django_db
def test_a_key_limited_to_some_types_may_not_publish_others(user):
    _, secret = service_key_create(name="drafting", event_types=["draft_ready"])
    client = client_with(secret)
    batch = [event_for(user, "draft_ready"), event_for(user, "email_sent")]

    response = post(client, {"events": batch})

    assert response.status_code == 403
    assert response.json() == {"detail": "This service key may not publish email_sent."}
    assert not Event.objects.exists()
    assert post(client, event_for(user, "draft_ready")).status_code == 201


@pytest.mark.django_db
def test_the_last_use_is_kept_and_written_at_most_once_a_minute(service, user):
    key = ServiceKey.objects.get()
    assert key.last_used_at is None
    post(service, event_for(user))
    first = ServiceKey.objects.get().last_used_at
    assert first is not None
    post(service, event_for(user))
    assert ServiceKey.objects.get().last_used_at == first  # within the minute: not rewritten
    ServiceKey.objects.update(last_used_at=first - timedelta(minutes=2))
    post(service, event_for(user))
    assert ServiceKey.objects.get().last_used_at > first


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_more_than_500_events_is_413_and_500_are_published(service, user):
    response = post(service, {"events": [event_for(user, "email_sent")] * 501})
    assert response.status_code == 413
    assert response.json() == {"detail": "Too many events: at most 500 per request."}
    assert not Event.objects.exists()

    response = post(service, {"events": [event_for(user, "email_sent")] * 500})
    assert response.status_code == 201
    assert [e["id"] for e in response.json()["events"]] == list(range(1, 501))


@pytest.mark.django_db
def test_a_body_over_one_mebibyte_is_413(service, user):
    body = {"events": [event_for(user, "email_received", subject="x" * 1024 * 1024)]}

    response = post(service, body)

    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large: at most 1048576 bytes."}


@pytest.mark.django_db
def test_over_the_keys_rate_is_429_and_other_keys_are_not_counted(settings, service, user):
    settings.NOTIFICATIONS_PUBLISH_RATE = "2/min"
    _, other_secret = service_key_create(name="other")
    # The rate counts in windows of a clock minute: start well inside one.
    if (left := 60 - time.time() % 60) < 10:
        time.sleep(left)

    statuses = [post(service, event_for(user)).status_code for _ in range(3)]

    assert statuses == [201, 201, 429]
    refused = post(service, event_for(user))
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    assert "detail" in refused.json()
    assert post(client_with(other_secret), event_for(user)).status_code == 201
    assert len(stored(user)) == 3


# --- idempotency keys --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_retried_batch_with_the_same_key_publishes_each_event_once(service, user, other_user):
    batch = {"events": [event_for(user), event_for(other_user), event_for(user, "email_sent")]}

    first = post(service, batch, HTTP_IDEMPOTENCY_KEY="batch-1")
    again = post(service, batch, HTTP_IDEMPOTENCY_KEY="batch-1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content  # byte for byte, key order included
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert stored(user) == [(1, "draft_ready"), (2, "email_sent")]
    assert Event.objects.count() == 3


@pytest.mark.django_db
def test_the_same_body_in_another_key_order_is_a_repeat(service, user):
    event = event_for(user)
    reordered = json.dumps({key: event[key] for key in reversed(event)}, indent=2)

    first = post(service, event, HTTP_IDEMPOTENCY_KEY="k")
    repeat = service.post(URL, reordered, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")

    assert repeat.status_code == 201 and repeat.json() == first.json()
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422_and_publishes_nothing(service, user):
    assert post(service, event_for(user), HTTP_IDEMPOTENCY_KEY="k").status_code == 201

    response = post(service, event_for(user, "email_sent"), HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert stored(user) == [(1, "draft_ready")]


@pytest.mark.django_db
def test_idempotency_keys_belong_to_their_service_key(service, user):
    _, other_secret = service_key_create(name="other")
    post(service, event_for(user), HTTP_IDEMPOTENCY_KEY="k")

    response = post(client_with(other_secret), event_for(user), HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 201 and response.json()["events"][0]["id"] == 2


@pytest.mark.django_db
def test_a_key_older_than_24_hours_publishes_again_and_is_pruned(service, user):
    post(service, event_for(user), HTTP_IDEMPOTENCY_KEY="k")
    PublishReceipt.objects.update(created_at=timezone.now() - timedelta(hours=25))

    response = post(service, event_for(user), HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 201 and response.json()["events"][0]["id"] == 2
    assert PublishReceipt.objects.count() == 1  # the expired receipt was replaced
    from notifications.services import publish_receipt_prune

    assert publish_receipt_prune() == 0
    PublishReceipt.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert publish_receipt_prune() == 1


@pytest.mark.django_db
def test_a_failed_publish_leaves_no_receipt_so_a_corrected_retry_publishes(service, user):
    bad = event_for(user)
    bad["data"]["requires_approval"] = "yes"
    assert post(service, bad, HTTP_IDEMPOTENCY_KEY="k").status_code == 400

    response = post(service, event_for(user), HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 201
    assert list(PublishReceipt.objects.values_list("response", flat=True)) == [
        json.dumps(response.json(), separators=(",", ":"))
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "nul\x00byte", "tab\tkey", "clé"])
def test_an_idempotency_key_not_1_to_255_printable_ascii_characters_is_400(service, user, key):
    response = post(service, event_for(user), HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert response.json() == {"Idempotency-Key": ["From 1 to 255 printable ASCII characters."]}
    assert not Event.objects.exists()


# --- delivery ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_kind")
async def test_a_socket_receives_the_published_events_with_the_ids_of_the_response(
    service, user, other_user
):
    comm, _ = await connect(access_token_for(user))
    batch = [event_for(user), event_for(other_user), event_for(user, "email_sent")]

    response = await sync_to_async(post)(service, {"events": batch})

    assert response.status_code == 201
    mine = [e for e in response.json()["events"] if e["user_id"] == str(user.id)]
    assert await receive_events(comm, 2) == mine
    assert [e["id"] for e in mine] == [1, 2]
    await comm.disconnect()


# --- concurrency (PostgreSQL: row locks and the unique index) ----------------------------------


def in_threads(count: int, work) -> list:
    """Run work(index) in `count` threads released at once; return results or raise errors."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index):
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks and waits on a unique index: PostgreSQL only")


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_only")
@pytest.mark.django_db(transaction=True)
def test_overlapping_batches_from_concurrent_requests_never_deadlock(
    settings, service_secret, make_user
):
    settings.NOTIFICATIONS_PUBLISH_RATE = "100000/s"
    users = [make_user() for _ in range(10)]
    requests_each, per_batch = 8, 40

    def producer(index):
        rng, client, statuses = random.Random(index), client_with(service_secret), []
        for _ in range(requests_each):
            targets = [rng.choice(users) for _ in range(per_batch)]  # any order, repeats
            response = post(client, {"events": [event_for(u, "email_sent") for u in targets]})
            statuses.append(response.status_code)
        return statuses

    results = in_threads(4, producer)

    assert results == [[201] * requests_each] * 4
    total = 0
    for user in users:
        ids = list(
            Event.objects.filter(user=user).order_by("event_id").values_list("event_id", flat=True)
        )
        assert ids == list(range(1, len(ids) + 1))
        total += len(ids)
    assert total == 4 * requests_each * per_batch


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_only")
@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_idempotency_key_publish_once(
    settings, service_secret, user, other_user
):
    settings.NOTIFICATIONS_PUBLISH_RATE = "100000/s"
    batch = {"events": [event_for(user), event_for(other_user), event_for(user, "email_sent")]}

    responses = in_threads(
        8, lambda _: post(client_with(service_secret), batch, HTTP_IDEMPOTENCY_KEY="once")
    )

    assert {r.status_code for r in responses} == {201}
    bodies = {json.dumps(r.json(), sort_keys=True) for r in responses}
    assert len(bodies) == 1
    assert sum("Idempotent-Replayed" not in r for r in responses) == 1
    assert stored(user) == [(1, "draft_ready"), (2, "email_sent")]
    assert Event.objects.count() == 3 and PublishReceipt.objects.count() == 1


# --- no input reaches a 5xx --------------------------------------------------------------------

junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(["", "draft_ready", "rfk_", str(uuid.UUID(int=0)), "a@b.c", 10**30]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(["user", "type", "data", "events"]), st.text(max_size=5)),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def plausible_event(user):
    good = event_for(user, "email_classified")
    fields = {name: st.one_of(st.just(value), junk) for name, value in good.items()}
    data = {name: st.one_of(st.just(value), junk) for name, value in good["data"].items()}
    return st.one_of(
        st.fixed_dictionaries({}, optional=fields),
        st.fixed_dictionaries({**fields, "data": st.fixed_dictionaries({}, optional=data)}),
    )


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_body_is_a_json_answer_below_500(settings, service, user, data):
    settings.NOTIFICATIONS_PUBLISH_RATE = "100000/s"  # examples run faster than the default
    event = plausible_event(user)
    body = data.draw(
        st.one_of(
            event,
            st.fixed_dictionaries({"events": st.lists(st.one_of(event, junk), max_size=4)}),
            junk,
        )
    )
    key = data.draw(st.one_of(st.none(), st.text(min_size=1, max_size=8)))
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}

    response = post(service, body, **headers)

    assert response.status_code in {201, 400, 403, 422}, (body, response.content)
    assert isinstance(response.json(), dict)
