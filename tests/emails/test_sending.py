"""Replies through Django's SMTP backend to a real SMTP server (aiosmtpd) started by the test."""

import email
from email import policy

import pytest
from aiosmtpd.controller import Controller

from emails import services
from emails.models import DraftStatus, EmailStatus
from tests.emails.factories import EmailFactory
from tests.support.redis import free_port

pytestmark = pytest.mark.django_db


class Recorder:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp(settings):
    def start(refuse: bool = False) -> Recorder:
        handler = Recorder(refuse)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        servers.append(controller)
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_TIMEOUT = 5
        return handler

    servers: list[Controller] = []
    yield start
    for controller in servers:
        controller.stop()


def test_an_approved_reply_reaches_the_smtp_server_threaded(user, smtp, events):
    recorder = smtp()
    original = EmailFactory(
        owner=user,
        source_message_id="<q-42@acme-corp.com>",
        references="<thread-root@acme-corp.com>",
    )
    draft = services.email_process(email=original).drafts.get()

    draft = services.draft_approve(user=user, draft_id=draft.id)

    assert draft.status == DraftStatus.SENT
    [envelope] = recorder.envelopes
    assert envelope.mail_from == user.email
    assert envelope.rcpt_tos == ["john.doe@acme-corp.com"]
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert message["In-Reply-To"] == "<q-42@acme-corp.com>"
    assert message["References"] == "<thread-root@acme-corp.com> <q-42@acme-corp.com>"
    assert message["Message-ID"] == draft.message_id
    assert message["Subject"] == "Re: Question about enterprise pricing"
    assert message.get_content().startswith("Hi John,")
    assert [t for t, _ in events(user)][-2:] == ["draft_approved", "email_sent"]


def test_a_refused_recipient_fails_the_draft_without_email_sent(user, smtp, events):
    smtp(refuse=True)
    draft = services.email_process(email=EmailFactory(owner=user)).drafts.get()

    draft = services.draft_approve(user=user, draft_id=draft.id)

    assert draft.status == DraftStatus.FAILED
    assert "SMTPRecipientsRefused" in draft.error and "mailbox unavailable" in draft.error
    assert draft.email.status == EmailStatus.DRAFTED
    assert "email_sent" not in [t for t, _ in events(user)]
