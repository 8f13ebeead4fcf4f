"""Publisher: the publish API (PROTOCOL §6) for other Python services, on the standard library.

A service holding a key and the server's URL publishes one event or a batch; each logical
publish gets one Idempotency-Key, generated before the first attempt and sent again with every
retry, so a retry after a timeout or a dropped connection never publishes twice.

    publisher = Publisher("https://notify.example.com", key=os.environ["REASONFLOW_KEY"])
    envelope = publisher.publish(user="ada@example.com", type="draft_ready", data={...})
    envelopes = publisher.publish_batch([{"user": ..., "type": ..., "data": {...}}, ...])
"""

import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from notifications.clients.python import backoff_delay

PUBLISH_PATH = "/api/v1/notifications/publish"
# Worth another attempt with the same Idempotency-Key: the server was busy, restarting or over
# the key's rate. Other 4xx are the caller's mistake and would fail the same way again.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class PublishError(Exception):
    """The server refused the publish (`status` and its JSON `body`), or it never answered
    within the retries (`status` None)."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class Publisher:
    """Publishes through POST /api/v1/notifications/publish with a service key.

    `retries` more attempts follow a timeout, a connection error, a 5xx or a 429 (waiting
    Retry-After when the server gives one, else full-jitter backoff), always with the same
    Idempotency-Key, then PublishError.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = base_url.rstrip("/") + PUBLISH_PATH
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep

    def publish(
        self, *, user: str, type: str, data: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Publish one event to `user` (UUID or email); return its envelope."""
        body = {"user": str(user), "type": type, "data": data}
        [envelope] = self._send(body, idempotency_key)
        return envelope

    def publish_batch(
        self, events: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Publish up to 500 events ({"user", "type", "data"} each), all or none, in order;
        return their envelopes in the same order."""
        return self._send({"events": events}, idempotency_key)

    def _send(self, body: dict[str, Any], idempotency_key: str | None) -> list[dict[str, Any]]:
        # Generated once per logical publish: every retry below repeats the same one.
        idempotency_key = idempotency_key or uuid.uuid4().hex
        payload = json.dumps(body, default=str).encode()
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        failure, wait = "no attempt made", None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(wait or backoff_delay(attempt - 1, initial=self.backoff))
            wait = None
            request = urllib.request.Request(self.url, payload, headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    return json.loads(response.read())["events"]
            except urllib.error.HTTPError as exc:
                answer = _json_or_text(exc.read())
                if exc.code not in RETRIED_STATUSES:
                    raise PublishError(
                        f"publish refused with {exc.code}: {answer}", status=exc.code, body=answer
                    ) from None
                failure = f"HTTP {exc.code}: {answer}"
                wait = _retry_after(exc.headers.get("Retry-After"))
            except (http.client.HTTPException, OSError) as exc:  # timeouts, resets, refusals
                failure = f"{type(exc).__name__}: {exc}"
        raise PublishError(f"publish failed after {self.retries + 1} attempts; last: {failure}")


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
