"""Log formatting: one JSON object per line when LOG_FORMAT=json, and never a token or a service
key either way.

Fields passed with `extra=` (user_id, close_code, duration_s, reason, ...) become JSON keys.
"""

import json
import logging
import re
from datetime import UTC, datetime

# A JWT (header.payload.signature, base64url, header starting with '{"') anywhere in a message,
# argument or traceback: a token must never reach a log line, whoever logged it.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# A service key (notifications.models.SERVICE_KEY_PREFIX): its clear prefix stays, to tell which.
_SERVICE_KEY = re.compile(r"(rfk_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]+")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """`text` with every JWT-looking substring replaced, and every service key cut to the
    prefix the admin lists it by."""
    return _SERVICE_KEY.sub(r"\1…[key redacted]", _JWT.sub("[token redacted]", text))


class RedactingFormatter(logging.Formatter):
    """The plain text format, tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, extra fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(entry, default=str, ensure_ascii=False))
