"""notifications/clients/publisher.py against a live server on the test database: publishing,
refusals, and retries that repeat the Idempotency-Key, through a proxy that loses answers."""

import http.server
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection

from notifications.clients.publisher import Publisher, PublishError
from notifications.events import sample_data
from notifications.models import Event, PublishReceipt
from notifications.services import service_key_create
from tests.support.live import LiveServer
from tests.support.shared_db import live_database_url

pytestmark = pytest.mark.live


@pytest.fixture
def server(transactional_db):
    with LiveServer(env={"DATABASE_URL": live_database_url()}) as live:
        yield live


@pytest.fixture
def secret(transactional_db):
    return service_key_create(name="publisher test")[1]


class AnswerLosingProxy:
    """An HTTP proxy to `upstream` that forwards every request but, for the first `lose`
    ones, never answers: the server did the work and the client sees a timeout, as when a
    response is lost on the way back."""

    def __init__(self, upstream: str, *, lose: int, hold: float) -> None:
        self.forwarded: list[dict] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(upstream + self.path, body, headers, method="POST")  # noqa: S310
                try:
                    response = urllib.request.urlopen(request, timeout=10)  # noqa: S310
                except urllib.error.HTTPError as exc:
                    response = exc
                status, answer = response.status, response.read()
                proxy.forwarded.append({"status": status, "key": headers.get("Idempotency-Key")})
                if len(proxy.forwarded) <= lose:
                    threading.Event().wait(hold)  # past the client's timeout; then hang up
                    self.close_connection = True
                    return
                self.send_response(status)
                for name in ("Content-Type", "Retry-After", "Idempotent-Replayed"):
                    if response.headers.get(name):
                        self.send_header(name, response.headers[name])
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_publish_and_publish_batch_return_the_stored_envelopes(server, secret, user, other_user):
    publisher = Publisher(server.http_url, secret)

    one = publisher.publish(user=user.email, type="draft_ready", data=sample_data("draft_ready"))
    batch = publisher.publish_batch(
        [
            {"user": str(other_user.id), "type": "email_sent", "data": sample_data("email_sent")},
            {"user": user.email, "type": "email_sent", "data": sample_data("email_sent")},
        ]
    )

    assert one == Event.objects.get(user=user, event_id=1).envelope()
    assert [(e["user_id"], e["id"]) for e in batch] == [(str(other_user.id), 1), (str(user.id), 2)]
    assert batch[1] == Event.objects.get(user=user, event_id=2).envelope()


def test_a_retry_after_a_lost_answer_publishes_each_event_once(server, secret, user, other_user):
    proxy = AnswerLosingProxy(server.http_url, lose=1, hold=2.0)
    try:
        publisher = Publisher(proxy.url, secret, timeout=1.0, retries=3, backoff=0.05)
        events = [
            {"user": user.email, "type": "draft_ready", "data": sample_data("draft_ready")},
            {"user": other_user.email, "type": "email_sent", "data": sample_data("email_sent")},
            {"user": user.email, "type": "email_sent", "data": sample_data("email_sent")},
        ]

        envelopes = publisher.publish_batch(events)
    finally:
        proxy.close()

    # The first attempt was published and its answer lost; the retry got that answer back.
    assert [f["status"] for f in proxy.forwarded] == [201, 201]
    assert len({f["key"] for f in proxy.forwarded}) == 1 and proxy.forwarded[0]["key"]
    assert Event.objects.count() == 3 and PublishReceipt.objects.count() == 1
    assert envelopes == [
        Event.objects.get(user_id=e["user_id"], event_id=e["id"]).envelope() for e in envelopes
    ]
    assert [e["id"] for e in envelopes] == [1, 1, 2]


def test_each_logical_publish_gets_its_own_idempotency_key(server, secret, user):
    publisher = Publisher(server.http_url, secret)
    data = sample_data("draft_ready")

    first = publisher.publish(user=user.email, type="draft_ready", data=data)
    second = publisher.publish(user=user.email, type="draft_ready", data=data)

    assert (first["id"], second["id"]) == (1, 2)
    assert PublishReceipt.objects.count() == 2


def test_a_refusal_is_not_retried_and_says_why(server, secret, user):
    publisher = Publisher(server.http_url, secret, retries=3)

    with pytest.raises(PublishError) as refused:
        publisher.publish(user=user.email, type="draft_ready", data={"draft_id": "x"})
    assert refused.value.status == 400 and "data" in refused.value.body

    with pytest.raises(PublishError) as unknown:
        Publisher(server.http_url, "rfk_nothing").publish(
            user=user.email, type="draft_ready", data=sample_data("draft_ready")
        )
    assert unknown.value.status == 401
    assert not Event.objects.exists()


def test_a_server_that_never_answers_fails_after_the_retries(transactional_db):
    proxy = AnswerLosingProxy("http://127.0.0.1:9", lose=0, hold=0)
    proxy.close()  # nothing listens there any more: every attempt is refused
    slept: list[float] = []
    publisher = Publisher(proxy.url, "rfk_x", retries=2, backoff=0.01, sleep=slept.append)

    with pytest.raises(PublishError, match="after 3 attempts") as failed:
        publisher.publish(user="a@example.com", type="draft_ready", data={})
    assert failed.value.status is None and len(slept) == 2


def test_over_the_keys_rate_it_waits_retry_after_and_publishes(transactional_db, user):
    _, secret = service_key_create(name="slow lane")
    env = {"DATABASE_URL": live_database_url(), "NOTIFICATIONS_PUBLISH_RATE": "1/s"}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with LiveServer(env=env) as live:
        publisher = Publisher(live.http_url, secret, retries=3, sleep=sleep)
        # Three in well under a second: two of them share a one-second window.
        envelopes = [
            publisher.publish(user=user.email, type="email_sent", data=sample_data("email_sent"))
            for _ in range(3)
        ]

    assert [envelope["id"] for envelope in envelopes] == [1, 2, 3]
    assert slept and all(0 < seconds <= 1 for seconds in slept)  # Retry-After, not a guess
    assert Event.objects.count() == 3


@pytest.mark.postgres
def test_concurrent_repeats_to_a_served_process_publish_once(server, secret, user, other_user):
    if connection.vendor != "postgresql":
        pytest.skip("waits on a unique index across server threads: PostgreSQL only")
    batch = json.dumps(
        {
            "events": [
                {"user": user.email, "type": "draft_ready", "data": sample_data("draft_ready")},
                {
                    "user": str(other_user.id),
                    "type": "email_sent",
                    "data": sample_data("email_sent"),
                },
            ]
        }
    ).encode()
    barrier = threading.Barrier(8)
    answers: list[tuple[int, bytes, str | None]] = []

    def post() -> None:
        request = urllib.request.Request(  # noqa: S310
            server.http_url + "/api/v1/notifications/publish",
            batch,
            {
                "Authorization": f"Bearer {secret}",
                "Content-Type": "application/json",
                "Idempotency-Key": "the same publish",
            },
            method="POST",
        )
        barrier.wait()
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            answers.append(
                (response.status, response.read(), response.headers["Idempotent-Replayed"])
            )

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(answers) == 8 and {status for status, _, _ in answers} == {201}
    assert len({body for _, body, _ in answers}) == 1  # byte for byte
    assert sorted(replayed or "" for _, _, replayed in answers) == [""] + ["true"] * 7
    assert Event.objects.count() == 2 and PublishReceipt.objects.count() == 1
