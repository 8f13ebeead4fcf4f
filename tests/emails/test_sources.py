"""Mail sources against real inputs: mbox and maildir files written here with tricky MIME,
a real IMAP server (pymap) over implicit TLS and STARTTLS, and the demo mailbox."""

import mailbox
from datetime import UTC, datetime

import pytest

from emails import services
from emails.demo_mailbox import DEMO_MESSAGES
from emails.models import Classification, Email, MailAccount
from emails.sources import MailSourceError, mail_source_from_url, parse_message
from tests.support.imap import ImapServer

pytestmark = pytest.mark.django_db

QP_LATIN1_ALTERNATIVE = b"""\
From: =?iso-8859-1?q?Ren=E9_Dupr=E9?= <rene@example.fr>
To: demo@reasonflow.local
Subject: =?utf-8?b?UmU6IFLDqXVuaW9uIOKAkyBwcm9jaGFpbmUgw6l0YXBl?=
Date: Tue, 03 Feb 2026 09:15:00 +0100
Message-ID: <alt-1@example.fr>
In-Reply-To: <root-1@reasonflow.local>
References: <root-1@reasonflow.local>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="OUTER"

--OUTER
Content-Type: multipart/alternative; boundary="INNER"

--INNER
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Bonjour, pouvez-vous confirmer la r=E9union de jeudi =E0 10h ?
--INNER
Content-Type: text/html; charset="iso-8859-1"

<p>Bonjour</p>
--INNER--

--OUTER
Content-Type: application/pdf; name="agenda.pdf"
Content-Disposition: attachment; filename="agenda.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K
--OUTER
Content-Type: text/plain; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"

These notes are an attachment, not the body.
--OUTER--
"""

HTML_ONLY_CP1252 = (
    b"From: Shop <news@shop.example>\n"
    b"Subject: Weekly deals\n"
    b"Message-ID: <html-1@shop.example>\n"
    b"Date: not a date at all\n"
    b"Content-Type: text/html; charset=windows-1252\n"
    b"Content-Transfer-Encoding: 8bit\n\n"
    b"<html><head><style>p{color:red}</style></head><body><p>\x93Smart quotes\x94 "
    b"&amp; more</p><p>Second paragraph</p><script>alert(1)</script></body></html>\n"
)

UNKNOWN_CHARSET_NO_ID = (
    b"From: =?x-unknown?q?Jos=E9?= <jose@example.es>\n"
    b"Subject: =?koi8-r?b?8NLJ18XU?=\n"
    b"Content-Type: text/plain; charset=x-made-up\n\n"
    b"caf\xe9 ol\xe9\n"
)

KOI8_BODY = (
    "From: Ivan <ivan@example.ru>\nSubject: Question\nMessage-ID: <koi8@example.ru>\n"
    "Content-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: 8bit\n\n"
    "Здравствуйте, сколько это стоит?\n"
).encode("koi8-r")

TRICKY = [QP_LATIN1_ALTERNATIVE, HTML_ONLY_CP1252, UNKNOWN_CHARSET_NO_ID, KOI8_BODY]


def assert_tricky_emails_stored(user):
    emails = {e.sender: e for e in Email.objects.filter(owner=user)}
    assert len(emails) == 4

    french = emails["René Dupré <rene@example.fr>"]
    assert french.subject == "Re: Réunion \u2013 prochaine étape"
    assert french.body == "Bonjour, pouvez-vous confirmer la réunion de jeudi à 10h ?"
    assert french.source_message_id == "<alt-1@example.fr>"
    assert french.thread_id == "<root-1@reasonflow.local>"
    assert french.references == "<root-1@reasonflow.local>"
    assert french.received_at == datetime(2026, 2, 3, 8, 15, tzinfo=UTC)
    assert "attachment" not in french.body

    html = emails["Shop <news@shop.example>"]
    assert html.body == "\u201cSmart quotes\u201d & more\n\nSecond paragraph"
    assert html.received_at is not None

    unknown = next(e for s, e in emails.items() if s.endswith("<jose@example.es>"))
    assert unknown.subject == "Привет"
    assert unknown.body == "café olé"
    assert unknown.source_message_id.startswith("<sha256.")

    assert emails["Ivan <ivan@example.ru>"].body == "Здравствуйте, сколько это стоит?"


def test_mbox_with_tricky_mime_is_parsed_and_synced_once(user, settings, tmp_path, events):
    path = tmp_path / "takeout.mbox"
    box = mailbox.mbox(path)
    for raw in TRICKY:
        box.add(raw)
    box.flush()
    settings.EMAILS_SOURCE = f"mbox://{path}"

    assert len(services.email_sync(user=user)) == 4
    assert_tricky_emails_stored(user)
    assert services.email_sync(user=user) == []  # even the one without a Message-ID

    box.add(b"From: late@example.com\nSubject: Later\nMessage-ID: <late@x>\n\nhello\n")
    box.flush()
    assert [e.subject for e in services.email_sync(user=user)] == ["Later"]
    assert [t for t, _ in events(user)] == ["email_received"] * 5


def test_maildir_with_tricky_mime_is_parsed(user, settings, tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for raw in TRICKY:
        box.add(raw)
    settings.EMAILS_SOURCE = f"maildir://{tmp_path}/Maildir"

    assert len(services.email_sync(user=user)) == 4
    assert_tricky_emails_stored(user)


def test_a_directory_is_not_an_mbox(user, settings, tmp_path):
    settings.EMAILS_SOURCE = f"mbox://{tmp_path}"
    with pytest.raises(MailSourceError, match="no mbox file"):
        services.email_sync(user=user)


def test_a_corrupt_mbox_still_syncs_what_it_can(user, settings, tmp_path):
    path = tmp_path / "odd.mbox"
    path.write_bytes(b"From x\n\x00\xff\xfe garbage without headers\n")
    settings.EMAILS_SOURCE = f"mbox://{path}"

    [email] = services.email_sync(user=user)
    assert email.sender == "(unknown sender)"
    assert "\x00" not in email.body and "garbage without headers" in email.body


def test_unknown_source_urls_are_refused():
    with pytest.raises(MailSourceError, match="unknown mail source"):
        mail_source_from_url("pop3://host")
    with pytest.raises(MailSourceError, match="needs a host"):
        mail_source_from_url("imaps:///INBOX")


def test_parse_message_survives_a_header_the_policy_rejects():
    parsed = parse_message(b"From: broken <<@@>>\nSubject: =?utf-8?q?bad=ZZ?=\n\nbody\n")
    assert parsed.body == "body"
    assert parsed.sender


def test_the_demo_mailbox_covers_every_classification():
    from emails.classifier import ClassifierInput, RuleClassifier

    labels = {
        RuleClassifier()
        .classify(ClassifierInput(subject=m["subject"], sender=m["sender"], body=m["body"]))
        .label
        for m in DEMO_MESSAGES
    }
    assert len(DEMO_MESSAGES) == 30
    assert labels == set(Classification)


def test_the_demo_starts_over_with_fresh_ids_after_the_last_message(user, settings):
    settings.EMAILS_DEMO_PER_SYNC = 20
    services.email_sync(user=user)
    services.email_sync(user=user)

    assert Email.objects.filter(owner=user).count() == 40
    assert Email.objects.filter(owner=user, subject=DEMO_MESSAGES[0]["subject"]).count() == 2


# --- IMAP -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imap_server():
    server = ImapServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize("starttls", [False, True], ids=["imaps", "starttls"])
def test_imap_sync_is_incremental_by_uid(user, settings, imap_server, starttls, events):
    port = imap_server.starttls_port if starttls else imap_server.plain_port
    before = Email.objects.count()
    tag = "tls" if starttls else "ssl"
    for raw in TRICKY:
        imap_server.append(raw.replace(b"example.", f"{tag}.example.".encode()), port=port)
    settings.EMAILS_SOURCE = imap_server.url(starttls=starttls)

    assert len(services.email_sync(user=user)) == 4
    assert Email.objects.count() == before + 4
    french = Email.objects.get(owner=user, sender=f"René Dupré <rene@{tag}.example.fr>")
    assert french.body == "Bonjour, pouvez-vous confirmer la réunion de jeudi à 10h ?"

    assert services.email_sync(user=user) == []
    late = f"From: new@{tag}.example.com\nSubject: New one\nMessage-ID: <new-{tag}@x>\n\nhi\n"
    imap_server.append(late.encode(), port=port)
    assert [e.subject for e in services.email_sync(user=user)] == ["New one"]
    state = MailAccount.objects.get(owner=user).state
    assert state["resume"]["last_uid"] > 0 and state["resume"]["uidvalidity"]
    assert [t for t, _ in events(user)] == ["email_received"] * 5


def test_imap_wrong_password_is_a_source_error_that_writes_nothing(user, settings, imap_server):
    settings.EMAILS_SOURCE = imap_server.url(password="wrong")

    with pytest.raises(MailSourceError, match=r"IMAP 127\.0\.0\.1"):
        services.email_sync(user=user)
    assert not Email.objects.filter(owner=user).exists()


def test_imap_untrusted_certificate_is_refused(user, settings, imap_server):
    settings.EMAILS_SOURCE = imap_server.url().split("?")[0]

    with pytest.raises(MailSourceError, match="CERTIFICATE_VERIFY_FAILED"):
        services.email_sync(user=user)
