"""Fixtures of the email domain: the event store read back in order, and defaults that keep
every test on the demo source, the immediate task backend and Django's locmem mail outbox."""

import pytest

from notifications.models import Event


@pytest.fixture(autouse=True)
def emails_defaults(settings):
    settings.EMAILS_SOURCE = "demo:"
    settings.EMAILS_DEMO_PER_SYNC = 3
    settings.EMAILS_REPLY_FROM = ""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def stored_events(user) -> list[tuple[str, dict]]:
    """(type, data) of every event stored for `user`, in event id order."""
    return [
        (event.type, event.data)
        for event in Event.objects.filter(user_id=user.id).order_by("event_id")
    ]


@pytest.fixture
def events():
    return stored_events
