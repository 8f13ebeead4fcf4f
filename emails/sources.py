"""Mail sources (demo, mbox, maildir, IMAP) and the MIME parsing they share.

A source is named by a URL (`demo:`, `mbox:///path`, `maildir:///path`,
`imaps://user:pass@host/INBOX`, `imap://…` for STARTTLS) and returns parsed messages.
"""

import abc
import contextlib
import dataclasses
import email.utils
import hashlib
import imaplib
import logging
import mailbox
import re
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from django.conf import settings
from django.utils import timezone

from emails.demo_mailbox import DEMO_MESSAGES

MAX_ID_LENGTH = 255

logger = logging.getLogger(__name__)


class MailSourceError(Exception):
    """The mail source cannot be read (missing file, refused login, broken connection)."""


@dataclasses.dataclass(frozen=True)
class IncomingMessage:
    message_id: str
    thread_id: str
    references: str
    subject: str
    sender: str
    recipient: str
    body: str
    received_at: datetime


@dataclasses.dataclass(frozen=True)
class FetchResult:
    messages: list[IncomingMessage]
    state: dict


IsKnown = Callable[[str], bool]


class MailSource(Protocol):
    def fetch(self, *, state: dict, limit: int, is_known: IsKnown) -> FetchResult:
        """Up to `limit` messages not seen before, and the state to resume from next time."""


# --- parsing --------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def _clean(value: str) -> str:
    return _WHITESPACE.sub(" ", _no_nul(value)).strip()


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a corrupt message may carry one.
    return value.replace("\x00", "")


def _header(message: Message, name: str) -> str:
    """A header as text: RFC 2047 words decoded, unknown charsets replaced, never raising."""
    try:
        value = message.get(name)
        return "" if value is None else _clean(str(value))
    except Exception:  # a malformed header must not stop the sync: decode it by hand below
        logger.debug("malformed %s header", name, exc_info=True)
    raw = next((value for key, value in message.raw_items() if key.lower() == name.lower()), "")
    parts = []
    for chunk, charset in decode_header(str(raw)):
        parts.append(_decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk)
    return _clean("".join(parts))


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Latin-1 maps every byte, so a mislabelled legacy message still reads mostly right.
    return data.decode("latin-1")


class _HTMLText(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in {"script", "style", "head"}:
            self.skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in {"script", "style", "head"} and self.skip:
            self.skip -= 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = (_clean(line) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    return _decode_bytes(payload, part.get_content_charset())


def _body(message: Message) -> str:
    """The text/plain body (else text/html as text); attachments are skipped."""
    plain, html = [], []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename():
            continue
        content_type = part.get_content_type()
        if content_type == "text/plain":
            plain.append(_part_text(part))
        elif content_type == "text/html":
            html.append(_part_text(part))
    if plain:
        return "\n\n".join(text.strip() for text in plain if text.strip())
    return "\n\n".join(html_to_text(text) for text in html)


def _message_ids(value: str) -> list[str]:
    return _MESSAGE_ID.findall(value)


def _short_id(value: str, raw: bytes) -> str:
    if value and len(value) <= MAX_ID_LENGTH:
        return value
    return f"<sha256.{hashlib.sha256(value.encode() or raw).hexdigest()}@reasonflow.local>"


def _date(message: Message, fallback: datetime | None) -> datetime:
    value = _header(message, "Date")
    try:
        moment = email.utils.parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError, IndexError):
        moment = None
    if moment is None:
        return fallback or timezone.now()
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_message(
    raw: bytes, *, fallback_id: str = "", fallback_date: datetime | None = None
) -> IncomingMessage:
    """Parse one RFC 5322 message into the fields an Email stores."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    found = _message_ids(_header(message, "Message-ID"))
    message_id = _short_id(found[0] if found else fallback_id, raw)
    in_reply_to = _message_ids(_header(message, "In-Reply-To"))
    references = _message_ids(_header(message, "References"))
    references += [mid for mid in in_reply_to if mid not in references]
    thread_root = references[0] if references else message_id
    return IncomingMessage(
        message_id=message_id,
        thread_id=_short_id(thread_root, raw),
        references=" ".join(references),
        subject=_header(message, "Subject"),
        sender=_header(message, "From")[:998] or "(unknown sender)",
        recipient=_header(message, "To")[:998],
        body=_no_nul(_body(message)),
        received_at=_date(message, fallback_date),
    )


# --- sources --------------------------------------------------------------------------------


class DemoSource:
    """The bundled demo mailbox, a few messages per sync, starting over with fresh ids."""

    def __init__(self, per_sync: int) -> None:
        self.per_sync = per_sync

    def fetch(self, *, state: dict, limit: int, is_known: IsKnown) -> FetchResult:
        cursor = int(state.get("cursor", 0))
        now = timezone.now()
        messages = []
        count = min(self.per_sync, limit)
        for offset in range(count):
            position = cursor + offset
            sample = DEMO_MESSAGES[position % len(DEMO_MESSAGES)]
            round_no = position // len(DEMO_MESSAGES)
            message_id = (
                f"<demo-{position % len(DEMO_MESSAGES):02d}.r{round_no}@mail.reasonflow.demo>"
            )
            references = (
                f"<demo-origin-{position % len(DEMO_MESSAGES):02d}@mail.reasonflow.demo>"
                if sample.get("reply")
                else ""
            )
            messages.append(
                IncomingMessage(
                    message_id=message_id,
                    thread_id=references or message_id,
                    references=references,
                    subject=sample["subject"],
                    sender=sample["sender"],
                    recipient=sample.get("recipient", "ReasonFlow Demo <demo@reasonflow.local>"),
                    body=sample["body"].strip(),
                    received_at=now - timedelta(seconds=count - offset),
                )
            )
        new = [message for message in messages if not is_known(message.message_id)]
        return FetchResult(messages=new, state={"cursor": cursor + count})


class _LocalMailbox(abc.ABC):
    """mbox and maildir through Python's `mailbox`; read only, new messages by Message-ID."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @abc.abstractmethod
    def open(self) -> mailbox.Mailbox:
        """The mailbox, or MailSourceError when there is none at the path."""

    def fetch(self, *, state: dict, limit: int, is_known: IsKnown) -> FetchResult:
        try:
            box = self.open()
            keys = sorted(box.keys(), key=str)
            messages = []
            for key in keys:
                if len(messages) >= limit:
                    break
                raw = box.get_bytes(key)
                parsed = parse_message(
                    raw, fallback_id="", fallback_date=self.fallback_date(box, key)
                )
                if not is_known(parsed.message_id):
                    messages.append(parsed)
        except (OSError, mailbox.Error, UnicodeError) as exc:
            raise MailSourceError(f"cannot read {self.path}: {exc}") from exc
        return FetchResult(messages=messages, state={})

    def fallback_date(self, box: mailbox.Mailbox, key) -> datetime | None:
        return None


class MboxSource(_LocalMailbox):
    def open(self) -> mailbox.Mailbox:
        if not self.path.is_file():
            raise MailSourceError(f"no mbox file at {self.path}")
        return mailbox.mbox(self.path, create=False)


class MaildirSource(_LocalMailbox):
    def open(self) -> mailbox.Mailbox:
        if not (self.path / "cur").is_dir() or not (self.path / "new").is_dir():
            raise MailSourceError(f"no maildir at {self.path} (needs cur/ and new/)")
        return mailbox.Maildir(self.path, factory=None, create=False)

    def fallback_date(self, box: mailbox.Maildir, key) -> datetime | None:
        return datetime.fromtimestamp(box.get_message(key).get_date(), tz=UTC)


class ImapSource:
    """IMAP over TLS (implicit or STARTTLS), incremental by UID within one UIDVALIDITY."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        folder: str,
        starttls: bool,
        cafile: str | None,
        timeout: float,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.folder, self.starttls = folder, starttls
        self.cafile, self.timeout = cafile, timeout

    def _connect(self) -> imaplib.IMAP4:
        context = ssl.create_default_context(cafile=self.cafile)
        if self.starttls:
            connection = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
            connection.starttls(ssl_context=context)
        else:
            connection = imaplib.IMAP4_SSL(
                self.host, self.port, ssl_context=context, timeout=self.timeout
            )
        return connection

    def fetch(self, *, state: dict, limit: int, is_known: IsKnown) -> FetchResult:
        connection = None
        try:
            connection = self._connect()
            connection.login(self.username, self.password)
            typ, data = connection.select(_quote_mailbox(self.folder), readonly=True)
            if typ != "OK":
                raise MailSourceError(f"IMAP folder {self.folder!r}: {_text(data)}")
            uidvalidity = int(connection.response("UIDVALIDITY")[1][0])
            # A new UIDVALIDITY renumbers the folder: start over (Message-IDs dedupe).
            last_uid = (
                int(state.get("last_uid", 0)) if state.get("uidvalidity") == uidvalidity else 0
            )
            typ, data = connection.uid("SEARCH", None, f"UID {last_uid + 1}:*")
            if typ != "OK":
                raise MailSourceError(f"IMAP search failed: {_text(data)}")
            # "n:*" always matches the highest UID, even when it is below n.
            uids = sorted(int(uid) for uid in (data[0] or b"").split() if int(uid) > last_uid)
            messages = []
            for uid in uids[:limit]:
                raw = self._fetch_one(connection, uid)
                parsed = parse_message(raw, fallback_id=f"<imap.{uidvalidity}.{uid}@{self.host}>")
                if not is_known(parsed.message_id):
                    messages.append(parsed)
                last_uid = uid
        except MailSourceError:
            raise
        except (imaplib.IMAP4.error, OSError, ValueError, IndexError) as exc:
            raise MailSourceError(f"IMAP {self.host}:{self.port}: {exc}") from exc
        finally:
            if connection is not None:
                with contextlib.suppress(imaplib.IMAP4.error, OSError):
                    connection.logout()
        return FetchResult(
            messages=messages, state={"uidvalidity": uidvalidity, "last_uid": last_uid}
        )

    @staticmethod
    def _fetch_one(connection: imaplib.IMAP4, uid: int) -> bytes:
        typ, data = connection.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if typ != "OK":
            raise MailSourceError(f"IMAP fetch of UID {uid} failed: {_text(data)}")
        # One (b"seq (BODY[] {n}", literal) pair; servers put the UID before or after it.
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return item[1]
        raise MailSourceError(f"IMAP fetch of UID {uid} returned no message")


def _quote_mailbox(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data) -> str:
    return " ".join(
        item.decode(errors="replace") if isinstance(item, bytes) else str(item)
        for item in data or []
    )


def mail_source_from_url(url: str) -> MailSource:
    """The source a URL names. Raises MailSourceError for a URL that names none."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "demo":
        return DemoSource(per_sync=settings.EMAILS_DEMO_PER_SYNC)
    if scheme in {"mbox", "maildir"}:
        path = Path(unquote(parts.netloc + parts.path)).expanduser()
        return MboxSource(path) if scheme == "mbox" else MaildirSource(path)
    if scheme in {"imap", "imaps"}:
        if not parts.hostname or not parts.username:
            raise MailSourceError("an IMAP source needs a host and a user name")
        query = parse_qs(parts.query)
        return ImapSource(
            host=parts.hostname,
            port=parts.port or (993 if scheme == "imaps" else 143),
            username=unquote(parts.username),
            password=unquote(parts.password or ""),
            folder=unquote(parts.path.lstrip("/")) or "INBOX",
            starttls=scheme == "imap",
            cafile=query.get("cafile", [None])[0],
            timeout=settings.EMAILS_SOURCE_TIMEOUT,
        )
    raise MailSourceError(f"unknown mail source {scheme or url!r}")


def source_label(url: str) -> str:
    """The URL without its password, to tell sources apart in sync state and messages."""
    parts = urlsplit(url.strip())
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}" if netloc or parts.path else f"{parts.scheme}:"
