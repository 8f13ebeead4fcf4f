"""Stream tickets (notifications/services.py): single use, expiry, and one winner when two
server processes redeem one ticket at once (PostgreSQL)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from notifications.models import StreamTicket
from notifications.services import stream_ticket_issue, stream_ticket_redeem


def issue(user, **overrides) -> str:
    options = {
        "user_id": user.id,
        "claims": {},
        "token_expires_at": timezone.now() + timedelta(minutes=5),
        **overrides,
    }
    ticket, _ = stream_ticket_issue(**options)
    return ticket


@pytest.mark.django_db
def test_a_ticket_is_redeemed_once(user):
    ticket = issue(user)
    redeemed = stream_ticket_redeem(ticket=ticket)
    assert redeemed is not None and redeemed.user_id == user.id
    assert stream_ticket_redeem(ticket=ticket) is None
    assert stream_ticket_redeem(ticket="never-issued") is None


@pytest.mark.django_db
def test_a_ticket_never_outlives_its_token_and_expired_ones_are_swept(user, settings):
    settings.NOTIFICATIONS_SSE_TICKET_TTL = 30
    soon = timezone.now() + timedelta(seconds=5)
    _, expires_at = stream_ticket_issue(user_id=user.id, claims={}, token_expires_at=soon)
    assert expires_at == soon
    StreamTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    (expired,) = StreamTicket.objects.all()
    issue(user)  # issuing sweeps what expired
    assert not StreamTicket.objects.filter(digest=expired.digest).exists()


@pytest.mark.django_db
def test_an_expired_ticket_is_not_redeemed(user):
    ticket = issue(user)
    StreamTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert stream_ticket_redeem(ticket=ticket) is None


@pytest.mark.django_db(transaction=True)
def test_of_many_concurrent_redemptions_exactly_one_wins(user):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent connections: PostgreSQL only")
    ticket = issue(user)
    barrier, results = threading.Barrier(8), []

    def redeem() -> None:
        from django.db import connections

        try:
            barrier.wait()
            results.append(stream_ticket_redeem(ticket=ticket))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert sum(result is not None for result in results) == 1
