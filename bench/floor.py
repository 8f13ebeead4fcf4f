"""The floor: a bare `websockets` server with ONE Redis pub/sub subscription per process,
fanning each message out to the local sockets of its user. No Django request path, no event
store, no channel layer: what a socket costs when nothing else does.

A client authenticates with the same first frame ({"token": ...}); the token's signature and
expiry are checked by simplejwt (no database). The publisher PUBLISHes "<user uuid>\\n<envelope>"
to FLOOR_CHANNEL; the envelope is forwarded unchanged.

Run: python -m bench.floor --host 127.0.0.1 --port P  (REDIS_URL in the environment)
"""

import argparse
import asyncio
import contextlib
import json
import os
from collections import defaultdict

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")

import django

django.setup()

import websockets  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

FLOOR_CHANNEL = "bench.floor"

sockets: dict[str, set] = defaultdict(set)


async def handler(ws) -> None:
    try:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        user_id = str(AccessToken(str(first["token"]))["user_id"])
    except Exception:
        await ws.close(4002)
        return
    members = sockets[user_id]
    members.add(ws)
    try:
        await ws.send(json.dumps({"type": "connected", "user_id": user_id}))
        await ws.wait_closed()
    finally:
        members.discard(ws)
        if not members:
            sockets.pop(user_id, None)


async def relay(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(FLOOR_CHANNEL)
    async for message in pubsub.listen():
        user_id, _, envelope = message["data"].decode().partition("\n")
        members = sockets.get(user_id)
        if members:
            websockets.broadcast(members, envelope)


async def serve(host: str, port: int) -> None:
    relay_task = asyncio.create_task(relay(os.environ["REDIS_URL"]))
    async with websockets.serve(
        handler, host, port, compression=None, ping_interval=20, max_size=64 * 1024, backlog=2048
    ) as server:
        try:
            await server.serve_forever()
        finally:
            relay_task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
