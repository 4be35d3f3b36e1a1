"""Ingest peer: a plain asyncio ``websockets`` client and ``redis.asyncio``, written the obvious way.

    python -m bench.peer_asyncio <ws_url> <redis_url> <stream>...

One task per connection reads frames, parses them with the standard library's ``json`` and keeps
the latest payload per symbol in a dict; one task writes that dict to Redis in a pipeline every
FLUSH_EVERY_S, each key once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import redis.asyncio
import websockets

from bench.peers import FLUSH_EVERY_S, PEER_TTL_MS, groups, peer_key, stop_on_signals

PEER = "asyncio"


async def read(ws_url: str, streams: list[str], latest: dict[str, Any]) -> None:
    """Keep the latest payload of each of ``streams`` in ``latest``."""
    async with websockets.connect(f"{ws_url}/stream?streams={streams[0]}", max_size=2**20) as ws:
        if len(streams) > 1:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams[1:], "id": 1}))
        async for message in ws:
            msg = json.loads(message)
            data = msg.get("data")
            if data is not None:
                latest[data["s"]] = data


async def write(client: redis.asyncio.Redis, latest: dict[str, Any]) -> None:
    """Write what changed, every FLUSH_EVERY_S."""
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        if not latest:
            continue
        batch = dict(latest)
        latest.clear()
        async with client.pipeline(transaction=False) as pipe:
            for symbol, data in batch.items():
                pipe.set(peer_key(PEER, symbol), json.dumps(data), px=PEER_TTL_MS)
            await pipe.execute()


async def run(ws_url: str, redis_url: str, streams: list[str]) -> None:
    """Read and write until SIGTERM."""
    stop = stop_on_signals()
    client = redis.asyncio.Redis.from_url(redis_url)
    latest: dict[str, Any] = {}
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(read(ws_url, group, latest)) for group in groups(streams)
    ]
    tasks.append(asyncio.create_task(write(client, latest)))
    done = asyncio.create_task(stop.wait())
    finished, _ = await asyncio.wait([*tasks, done], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await client.aclose()
    for task in finished:
        task.result()  # a reader or the writer that failed says why


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], sys.argv[3:]))
