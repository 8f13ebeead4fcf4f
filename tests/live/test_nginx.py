"""deploy/nginx.conf in front of server processes: WebSocket upgrades, the Origin check and
REST pass through it to both upstreams (TLS swapped for plain HTTP), and each client's own
address reaches the per-client limits."""

import asyncio
import http.client
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import websockets
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import AccessToken
from websockets.exceptions import InvalidStatus

from notifications.clients.sse import open_event_stream
from tests.support.demo_server import DemoServer, api
from tests.support.live import ROOT, LiveServer
from tests.support.live_clients import ws_connect
from tests.support.redis import free_port
from tests.support.shared_db import live_database_url

pytestmark = [
    pytest.mark.live,
    pytest.mark.redis,
    pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed"),
]


def nginx_config(listen_port: int, upstream_ports: list[int], workdir: Path) -> str:
    """deploy/nginx.conf with a plain-HTTP listener and these upstreams, in a standalone main
    config (pid, logs and temp paths inside `workdir`)."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = re.sub(r"listen 443 ssl;", f"listen 127.0.0.1:{listen_port};", site)
    site = re.sub(r"\s*ssl_certificate(_key)? .*;", "", site)
    site = re.sub(r"\s*http2 on;", "", site)
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstream_ports)
    site = re.sub(r"(?m)^    server 127\.0\.0\.1:800\d[^\n]*\n", "", site)
    site = site.replace("    least_conn;\n", f"    least_conn;\n{servers}")
    temp = workdir / "tmp"
    temp.mkdir()
    return (
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n access_log off;\n client_body_temp_path {temp};\n"
        f" proxy_temp_path {temp};\n fastcgi_temp_path {temp};\n uwsgi_temp_path {temp};\n"
        f" scgi_temp_path {temp};\n{site}\n}}\n"
    )


async def send_demo_event(base: str, staff: str) -> dict:
    status, body = await asyncio.to_thread(
        api,
        base,
        "POST",
        "notifications/test",
        token=staff,
        body={"user": "demo@reasonflow.local", "type": "email_received"},
    )
    assert status == 201
    return body


@pytest.fixture
def proxied(redis_url):
    with DemoServer(env={"REDIS_URL": redis_url}) as first:
        env = {"REDIS_URL": redis_url, "DATABASE_URL": first.database_url}
        with LiveServer(env=env) as second:
            workdir = Path(tempfile.mkdtemp(prefix="reasonflow-nginx-"))
            port = free_port()
            config = workdir / "nginx.conf"
            config.write_text(nginx_config(port, [first.port, second.port], workdir))
            subprocess.run(["nginx", "-t", "-c", str(config)], check=True, capture_output=True)
            nginx = subprocess.Popen(["nginx", "-c", str(config), "-g", "daemon off;"])
            time.sleep(0.5)
            try:
                yield first, port
            finally:
                nginx.terminate()
                nginx.wait(10)


async def test_sockets_and_rest_work_through_the_nginx_config(proxied):
    server, port = proxied
    base = f"http://127.0.0.1:{port}"
    ws_url = f"ws://127.0.0.1:{port}/api/v1/notifications/ws"
    staff = server.login()["access"]

    sockets = [ws for ws, _ in await asyncio.gather(*(ws_connect(ws_url, staff) for _ in range(6)))]
    body = await send_demo_event(base, staff)
    for ws in sockets:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == body["event"]

    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(ws_url, origin="https://evil.example.com", open_timeout=10)
    assert refused.value.response.status_code == 403
    await asyncio.gather(*(ws.close() for ws in sockets))


async def test_the_event_stream_is_not_buffered_through_the_nginx_config(proxied):
    server, port = proxied
    base = f"http://127.0.0.1:{port}"
    staff = server.login()["access"]
    streams = []
    for _ in range(4):  # both upstreams
        response = await open_event_stream(
            f"{base}/api/v1/notifications/stream", headers={"Authorization": f"Bearer {staff}"}
        )
        assert response.status == 200
        messages = response.messages().__aiter__()
        assert (await asyncio.wait_for(anext(messages), 10)).event == "connected"
        streams.append((response, messages))

    body = await send_demo_event(base, staff)
    for response, messages in streams:
        # One event, arriving alone: a buffering proxy would hold it back.
        message = await asyncio.wait_for(anext(messages), 5)
        assert json.loads(message.data) == body["event"]
        await response.close()

    foreign = await open_event_stream(
        f"{base}/api/v1/notifications/stream",
        headers={"Authorization": f"Bearer {staff}", "Origin": "https://evil.example.com"},
    )
    assert foreign.status == 403
    await foreign.close()


@pytest.fixture
def behind_nginx(transactional_db):
    """One server on the test database that trusts nginx (127.0.0.1), with a small per-address
    cap, behind deploy/nginx.conf."""
    env = {
        "DATABASE_URL": live_database_url(),
        "REDIS_URL": "",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "NOTIFICATIONS_MAX_PENDING_PER_IP": "3",
        "NOTIFICATIONS_CONNECT_RATE_PER_IP": "0",
    }
    with LiveServer(env=env) as server:
        workdir = Path(tempfile.mkdtemp(prefix="reasonflow-nginx-"))
        port = free_port()
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(port, [server.port], workdir))
        subprocess.run(["nginx", "-t", "-c", str(config)], check=True, capture_output=True)
        nginx = subprocess.Popen(["nginx", "-c", str(config), "-g", "daemon off;"])
        time.sleep(0.5)
        try:
            yield port
        finally:
            nginx.terminate()
            nginx.wait(10)


async def attempt(url: str, source: str, forwarded_for: str):
    try:
        return await websockets.connect(
            url,
            open_timeout=20,
            local_addr=(source, 0),
            additional_headers={"X-Forwarded-For": forwarded_for},
        )
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return None


def metrics_status(port: int, source: str) -> int:
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=15, source_address=(source, 0)
    )
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
async def test_through_nginx_each_client_counts_by_its_own_address(behind_nginx, make_user):
    port = behind_nginx
    ws_url = f"ws://127.0.0.1:{port}/api/v1/notifications/ws"
    user = await sync_to_async(make_user)()
    token = str(AccessToken.for_user(user))
    # nginx replaces the header a client sends: made-up addresses do not spread one client.
    spoofed = await asyncio.gather(
        *(attempt(ws_url, "127.0.0.2", f"198.51.100.{n}") for n in range(1, 6))
    )
    held = [ws for ws in spoofed if ws is not None]
    assert len(held) == 3
    other = await attempt(ws_url, "127.0.0.3", "198.51.100.1")
    assert other is not None, "another client behind the same nginx was locked out"
    await other.send(json.dumps({"token": token}))
    assert json.loads(await asyncio.wait_for(other.recv(), 10))["type"] == "connected"
    await asyncio.gather(*(ws.close() for ws in [*held, other]))

    assert await asyncio.to_thread(metrics_status, port, "127.0.0.2") == 403  # nginx's rule
    assert await asyncio.to_thread(metrics_status, port, "127.0.0.1") == 200
