"""The Origin check of the WebSocket upgrade (PROTOCOL §1)."""

import pytest

from notifications.realtime.origins import origin_allowed


@pytest.mark.parametrize(
    "origin",
    [
        None,
        b"http://localhost",
        b"http://localhost:8000",
        b"https://127.0.0.1:8443",
        b"http://[::1]:8000",
        b"https://app.example.com",
    ],
)
def test_allowed_origins(settings, origin):
    settings.NOTIFICATIONS_ALLOWED_ORIGINS = ["https://app.example.com"]
    assert origin_allowed(origin)


@pytest.mark.parametrize(
    "origin",
    [
        b"null",
        b"file://",
        b"file:///etc/passwd",
        b"http://localhost.evil.com",
        b"http://localhost@evil.com",
        b"http://evil.com#@localhost",
        b"http://user:pw@localhost",
        b"ftp://localhost",
        b"http://localhost/path",
        "http://l\u043ecalhost".encode(),  # Cyrillic o
        b"http://xn--lcalhost-9uf",
        b"https://app.example.com.evil.com",
        b"http://app.example.com",  # scheme differs from the allowed origin
        b"",
        b"http://localhost:99999",
    ],
)
def test_refused_origins(settings, origin):
    settings.NOTIFICATIONS_ALLOWED_ORIGINS = ["https://app.example.com"]
    assert not origin_allowed(origin)
