"""reasonflow/asgi.py. The HTTP body limit: a body over MAX_REQUEST_BODY_BYTES gets a 413
before it is read whole, with or without Content-Length; driven through the ASGI application
and through a real server (`manage.py serve`). The request threads: each request's sync code
on one long-lived thread, requests in flight at once on threads of their own."""

import asyncio
import http.client
import json
import socket
import threading

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async

from reasonflow.asgi import RequestThreads, application
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


# --- request threads ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # Django's request signals close connections
async def test_each_requests_sync_code_runs_on_one_thread_that_the_next_request_reuses():
    from django.core.signals import request_finished, request_started

    seen = []

    def record(**kwargs):
        seen.append(threading.current_thread())

    request_started.connect(record)
    request_finished.connect(record)
    try:
        for _ in range(3):
            status, content, _ = await call("/api/v1/auth/register", [b"{}"], [])
            assert status == 400, content
    finally:
        request_started.disconnect(record)
        request_finished.disconnect(record)
    # Django alone starts a thread per request (and asgiref one more to join it).
    assert len(seen) == 6 and len(set(seen)) == 1
    assert seen[0] is not threading.current_thread() and seen[0].is_alive()


def like_django(work):
    """An ASGI app that runs `work` as Django runs a view: in a ThreadSensitiveContext of its
    own, through sync_to_async."""

    async def app(scope, receive, send):
        async with ThreadSensitiveContext():
            return await sync_to_async(work, thread_sensitive=True)()

    return app


async def wait_until(condition, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_requests_in_flight_at_once_run_on_threads_of_their_own_and_only_keep_stay():
    together = threading.Barrier(3, timeout=5)  # broken if two requests shared a thread
    used = []

    def work():
        used.append(threading.current_thread())
        together.wait()
        return "done"

    threads = RequestThreads(like_django(work), keep=1)
    results = await asyncio.gather(*(threads(http_scope("/"), None, None) for _ in range(3)))

    assert results == ["done"] * 3 and len(set(used)) == 3
    assert len(threads.idle) == 1
    await wait_until(lambda: sum(thread.is_alive() for thread in used) == 1)


async def test_a_cancelled_request_does_not_hold_the_next_one_up():
    started, release = threading.Event(), threading.Event()
    log = []

    def slow():
        started.set()
        release.wait(5)
        log.append(("slow", threading.current_thread()))

    def quick():
        log.append(("quick", threading.current_thread()))

    threads = RequestThreads(like_django(slow), keep=4)
    request = asyncio.create_task(threads(http_scope("/"), None, None))
    await asyncio.to_thread(started.wait, 5)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    threads.app = like_django(quick)
    await threads(http_scope("/"), None, None)  # while the cancelled one's code still runs
    release.set()
    await wait_until(lambda: len(log) == 2 and not log[1][1].is_alive())

    (first, quick_thread), (second, slow_thread) = log
    assert (first, second) == ("quick", "slow") and slow_thread is not quick_thread
    await threads(http_scope("/"), None, None)  # the thread kept is the one that finished
    assert log[2] == ("quick", quick_thread)


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
