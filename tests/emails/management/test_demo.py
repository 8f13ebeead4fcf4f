"""`manage.py demo` against a real server, as `make demo` runs it beside `make run`."""

import io
import re

import pytest
from django.core.management import CommandError, call_command

from notifications.events import EventType
from tests.support.live import LiveServer

STRONG_KEY = "k" * 30 + "-production-signing-key-0123456789"


def run_demo(*args: str) -> str:
    out = io.StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def development_server():
    with LiveServer(env={"DEBUG": "true"}, demo=True) as server:
        yield server


def test_the_demo_shows_every_event_type_and_works_again_on_a_second_run(development_server):
    for _ in range(2):
        output = run_demo("--url", development_server.http_url, "--timeout", "60")
        arrived = {match for match in re.findall(r"<- #\d+ (\w+) ", output)}
        assert arrived == set(EventType), output
        assert "all eight event types arrived" in output
        for call in ("POST /api/v1/emails/sync", "/approve", "/reject", "emails/batch/sync"):
            assert call in output


def test_the_demo_reports_a_refused_sign_in(development_server):
    with pytest.raises(CommandError, match=r"sign-in failed \(401\)"):
        run_demo(
            "--url",
            development_server.http_url,
            "--email",
            "demo@reasonflow.local",
            "--password",
            "not-the-password",
        )


def test_the_demo_explains_a_server_without_demo_sign_in():
    with (
        LiveServer(env={"DEBUG": "false", "SECRET_KEY": STRONG_KEY}) as server,
        pytest.raises(CommandError, match=r"\(DEBUG is off\): pass --email and --password"),
    ):
        run_demo("--url", server.http_url)


def test_the_demo_says_when_no_server_answers():
    with pytest.raises(CommandError, match=r"cannot reach http://127\.0\.0\.1:9"):
        run_demo("--url", "http://127.0.0.1:9")


def test_email_and_password_go_together():
    with pytest.raises(CommandError, match="--email and --password go together"):
        run_demo("--email", "someone@example.com")
