"""The HTTP scope a server hands the ASGI application, for tests that call it directly."""


def http_scope(
    path: str,
    *,
    method: str = "POST",
    client: tuple[str, int] = ("127.0.0.1", 40000),
    headers: list[tuple[bytes, bytes]] = (),
) -> dict:
    """A JSON request's scope as uvicorn builds it (the client address already resolved)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": client,
        "server": ("testserver", 80),
    }
