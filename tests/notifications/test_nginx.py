"""deploy/nginx.conf in front of two server processes: WebSocket upgrades, the Origin check and
REST pass through it to both upstreams (TLS swapped for plain HTTP)."""

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support.demo_server import DemoServer, api
from tests.support.live import ROOT, LiveServer
from tests.support.live_clients import ws_connect
from tests.support.redis import free_port

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
    status, body = await asyncio.to_thread(
        api,
        base,
        "POST",
        "notifications/test",
        token=staff,
        body={"user": "demo@reasonflow.local", "type": "email_received"},
    )
    assert status == 201
    for ws in sockets:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == body["event"]

    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(ws_url, origin="https://evil.example.com", open_timeout=10)
    assert refused.value.response.status_code == 403
    await asyncio.gather(*(ws.close() for ws in sockets))
