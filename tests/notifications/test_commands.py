"""Operator commands through call_command; `listen` against a live server and a real WebSocket."""

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import urllib.request
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications import selectors, services
from notifications.management.commands.serve import Command as ServeCommand
from notifications.models import Event, PublishReceipt, ServiceKey
from notifications.realtime.auth import authenticate_access_token
from reasonflow.users.services import user_issue_tokens
from tests.support.live import ROOT, LiveServer
from tests.support.shared_db import live_database_url


def run(*args, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_send_test_event_stores_and_prints_the_event(user):
    out, err = run("send_test_event", "--user", user.email.upper(), "--type", "email_classified")
    event = Event.objects.get(user=user)
    assert json.loads(out) == event.envelope()
    assert event.type == "email_classified" and event.data["classification"] == "meeting_request"
    assert f"Sent email_classified event #1 to {user.email}; connections online: 0." in err


@pytest.mark.django_db(transaction=True)
def test_send_test_event_takes_a_uuid_and_json_data(user):
    data = {"job_id": "0b4f8a27-7c0e-4a55-8c67-3b0d5d1f7e10", "processed": 3, "total": 4}
    data["percentage"] = 75
    out, _ = run(
        "send_test_event", "--user", str(user.pk), "--type", "batch_progress",
        "--data", json.dumps(data),
    )  # fmt: skip
    assert json.loads(out)["data"] == data
    assert Event.objects.get(user=user).data == data


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody@example.com", "--type", "email_sent"], "No user"),
        (["--type", "email_sent", "--data", "{oops"], "not valid JSON"),
        (["--type", "email_sent", "--data", '{"email_id": 1}'], "missing keys"),
        (["--type", "no_such_type"], "invalid choice"),
    ],
)
def test_send_test_event_refuses_bad_input_and_stores_nothing(user, args, message):
    if "--user" not in args:
        args = ["--user", user.email, *args]
    with pytest.raises(CommandError, match=message):
        run("send_test_event", *args)
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_issue_token_prints_an_access_token_the_socket_accepts(user):
    out, _ = run("issue_token", "--user", user.email)
    assert authenticate_access_token(out.strip()).user == user
    pair = json.loads(run("issue_token", "--user", str(user.pk), "--json")[0])
    assert set(pair) == {"access", "refresh"}
    assert authenticate_access_token(pair["access"]).user == user
    with pytest.raises(CommandError, match="No user"):
        run("issue_token", "--user", "nobody@example.com")


@pytest.mark.django_db
def test_prune_events_deletes_only_events_past_retention(user):
    old, new = (services.event_send_sample(user_id=user.pk, event_type="email_sent") for _ in "ab")
    Event.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    out, _ = run("prune_events")
    assert out.splitlines()[0] == "Deleted 1 event(s)."
    assert list(Event.objects.values_list("event_id", flat=True)) == [new.event_id]
    out, _ = run("prune_events", "--older-than-seconds", "0")
    assert out.splitlines()[0] == "Deleted 1 event(s)."


@pytest.mark.django_db
def test_prune_events_also_deletes_publish_receipts_past_24_hours(user):
    key, _ = services.service_key_create(name="mailer")
    for name, age in [("old", timedelta(hours=25)), ("new", timedelta(hours=1))]:
        PublishReceipt.objects.create(
            service_key=key,
            idempotency_key=name,
            body_hash="0" * 64,
            response='{"events":[]}',
            created_at=timezone.now() - age,
        )

    out, _ = run("prune_events")

    assert out.splitlines()[1] == "Deleted 1 publish receipt(s) past 24 hours."
    assert list(PublishReceipt.objects.values_list("idempotency_key", flat=True)) == ["new"]


@pytest.mark.django_db
def test_create_service_key_prints_the_key_once_and_stores_only_its_hash():
    out, err = run(
        "create_service_key", "--name", "drafting agent", "--types", "draft_ready,email_sent"
    )

    secret = out.strip()
    assert secret.startswith("rfk_") and len(secret) == 47
    key = ServiceKey.objects.get()
    assert (key.name, key.event_types) == ("drafting agent", ["draft_ready", "email_sent"])
    assert key.prefix == secret[:12] and secret[12:] not in key.secret_hash
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in err and key.prefix in err
    assert selectors.service_key_get_by_secret(secret=secret) == key


@pytest.mark.django_db
def test_create_service_key_without_types_may_publish_every_type():
    run("create_service_key", "--name", "webhooks")
    key = ServiceKey.objects.get()
    assert key.event_types == [] and key.may_publish("batch_complete")


@pytest.mark.django_db
def test_create_service_key_refuses_a_type_off_the_catalogue():
    with pytest.raises(CommandError, match="unknown event type 'email_deleted'"):
        run("create_service_key", "--name", "x", "--types", "draft_ready,email_deleted")
    assert not ServiceKey.objects.exists()


@pytest.mark.django_db
def test_revoke_service_key_by_prefix_or_whole_key():
    _, first_secret = services.service_key_create(name="a")
    second, _ = services.service_key_create(name="b")

    assert run("revoke_service_key", first_secret)[0].startswith("Revoked a (")
    assert run("revoke_service_key", second.prefix)[0].startswith("Revoked b (")
    assert "already revoked" in run("revoke_service_key", second.prefix)[0]
    assert ServiceKey.objects.filter(revoked_at=None).count() == 0
    assert selectors.service_key_get_by_secret(secret=first_secret).is_active is False
    with pytest.raises(CommandError, match="No service key"):
        run("revoke_service_key", "rfk_nothere0")


@pytest.fixture
def shared_server(transactional_db):
    """A live server process on the test database (rows committed by the test are visible)."""
    server = LiveServer(env={"DATABASE_URL": live_database_url()})
    server.start()
    yield server
    server.stop()


def post_test_event(server: LiveServer, token: str, user: str, event_type: str) -> dict:
    request = urllib.request.Request(  # noqa: S310 - the local live server
        f"{server.http_url}/api/v1/notifications/test",
        data=json.dumps({"user": user, "type": event_type}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        return json.loads(response.read())["event"]


@pytest.mark.live
def test_listen_replays_then_prints_live_events_as_json_lines(shared_server, user, staff_user):
    stored = [
        services.event_send_sample(user_id=user.pk, event_type=event_type)
        for event_type in ("email_received", "draft_ready")
    ]
    out, err, failure = io.StringIO(), io.StringIO(), []

    def listen() -> None:
        try:
            call_command(
                "listen", "--user", user.email, "--url", shared_server.ws_url,
                "--last-event-id", "0", "--count", "3", stdout=out, stderr=err,
            )  # fmt: skip
        except Exception as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=listen)
    thread.start()
    staff_token = user_issue_tokens(user=staff_user)["access"]
    # Two events replayed, then one published live by the server while `listen` waits.
    deadline = timezone.now() + timedelta(seconds=20)
    while "connected as" not in err.getvalue() and timezone.now() < deadline and not failure:
        thread.join(0.05)
    live = post_test_event(shared_server, staff_token, str(user.pk), "email_sent")
    thread.join(30)
    assert not thread.is_alive() and not failure, (failure, err.getvalue())
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [e.envelope() for e in stored] + [live]
    assert f"connected as {user.pk}" in err.getvalue()
    assert "token" not in out.getvalue()


@pytest.mark.live
def test_listen_gives_up_when_the_server_refuses_the_user(shared_server, user):
    user.is_active = False
    user.save(update_fields=["is_active"])
    with pytest.raises(CommandError, match="refused the token"):
        run("listen", "--user", user.email, "--url", shared_server.ws_url, "--count", "1")


@pytest.mark.live
def test_serve_on_a_taken_port_says_so_before_printing_anything_else(shared_server):
    # The bind comes first: no banner, token or migration output for a server that cannot run.
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(shared_server.port)],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "true", "DATABASE_URL": shared_server.env["DATABASE_URL"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"cannot listen on 127.0.0.1:{shared_server.port}: Address already in use" in (
        result.stderr
    )
    assert "make run PORT=8001" in result.stderr


def test_every_serve_option_has_help_text():
    parser = ServeCommand().create_parser("manage.py", "serve")
    ours = [
        action
        for action in parser._actions
        if action.dest in {"host", "port", "no_demo", "no_migrate"}
    ]
    assert len(ours) == 4
    for action in ours:
        assert action.help, f"{action.option_strings} has no help text"
