"""The HTTP body limit of reasonflow/asgi.py: a body over MAX_REQUEST_BODY_BYTES gets a 413
before it is read whole, with or without Content-Length; driven through the ASGI application
and through a real server (`manage.py serve`)."""

import asyncio
import http.client
import json
import socket

import pytest

from reasonflow.asgi import application
from tests.conftest import PASSWORD
from tests.support.asgi import http_scope
from tests.support.live import LiveServer

LIMIT = 1024 * 1024
TOO_LARGE = {"detail": f"Request body too large: at most {LIMIT} bytes."}
CHUNK = 64 * 1024


async def call(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    """Run one HTTP request through the ASGI application: (status, JSON body, chunks read)."""
    scope = http_scope(path, headers=headers)
    read = 0
    sent = []

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            more = read < len(chunks)
            return {"type": "http.request", "body": chunks[read - 1], "more_body": more}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return status, json.loads(body), read


def chunked(body: bytes) -> list[bytes]:
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]


async def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read():
    body = b"x" * (3 * LIMIT)

    status, content, read = await call(
        "/api/v1/auth/login", chunked(body), [(b"content-length", b"%d" % len(body))]
    )

    assert (status, content, read) == (413, TOO_LARGE, 0)


async def test_a_chunked_body_is_refused_once_past_the_limit_not_read_to_its_end():
    body = b"[" + b"1," * (3 * LIMIT // 2) + b"1]"

    status, content, read = await call("/api/v1/auth/login", chunked(body), [])

    assert (status, content) == (413, TOO_LARGE)
    assert read == LIMIT // CHUNK + 1 < len(chunked(body))


@pytest.mark.django_db(transaction=True)
async def test_a_chunked_body_within_the_limit_is_read(user):
    # Without Content-Length, Django REST framework used to see no body at all.
    body = json.dumps({"email": user.email, "password": PASSWORD}).encode()

    status, content, _ = await call("/api/v1/auth/login", [body[:10], body[10:]], [])

    assert status == 200, content
    assert set(content) == {"access", "refresh"}


@pytest.mark.django_db(transaction=True)
async def test_a_body_at_the_limit_reaches_the_view():
    body = json.dumps({"email": "x" * (LIMIT - 40), "password": "y"}).encode()
    body += b" " * (LIMIT - len(body))

    status, content, _ = await call(
        "/api/v1/auth/register", chunked(body), [(b"content-length", b"%d" % len(body))]
    )

    assert status == 400 and "email" in content  # the view's own answer, not the limit's


# --- through a real server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with LiveServer() as live:
        yield live


def request(server, method, path, body=b"", headers=None, *, chunk=False, conn=None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/json", **(headers or {})}
    if chunk:
        conn.request(method, path, body=iter(chunked(body)), headers=headers, encode_chunked=True)
    else:
        conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read(), conn


@pytest.fixture(scope="module")
def token(server):
    credentials = {"email": "limits@example.com", "password": PASSWORD}
    status, _, _ = request(server, "POST", "/api/v1/auth/register", json.dumps(credentials))
    assert status == 201
    status, body, _ = request(server, "POST", "/api/v1/auth/login", json.dumps(credentials))
    return json.loads(body)["access"]


@pytest.mark.live
@pytest.mark.parametrize("chunk", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "authenticated"),
    [
        ("/api/v1/auth/login", False),
        ("/api/v1/auth/register", False),
        ("/api/v1/notifications/test", True),
        ("/api/v1/emails/batch/classify", True),
    ],
)
def test_a_live_server_answers_413_to_a_large_body(server, token, path, authenticated, chunk):
    body = json.dumps({"email": "x" * (3 * LIMIT)}).encode()
    headers = {"Authorization": f"Bearer {token}"} if authenticated else {}

    status, content, conn = request(server, "POST", path, body, headers, chunk=chunk)

    assert (status, json.loads(content)) == (413, TOO_LARGE)
    # The connection stays usable: the server discarded the rest of that body.
    status, _, _ = request(server, "GET", "/healthz", conn=conn)
    assert status == 200


@pytest.mark.live
def test_a_live_server_refuses_a_declared_large_body_without_waiting_for_it(server):
    # A client that asks first (`Expect: 100-continue`, as curl does) is told 413 and never
    # sends the 100 MB.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        answer = read_response(sock)

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == TOO_LARGE


def read_response(sock: socket.socket) -> bytes:
    """One whole response: the server may write its head and body in separate packets."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            return answer  # closed early: the assertions say what was missing
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.live
def test_a_live_server_reads_a_chunked_body_within_the_limit(server, token):
    credentials = json.dumps({"email": "limits@example.com", "password": PASSWORD}).encode()

    status, content, _ = request(server, "POST", "/api/v1/auth/login", credentials, chunk=True)

    assert status == 200, content
    assert set(json.loads(content)) == {"access", "refresh"}
