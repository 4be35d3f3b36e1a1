"""Ingest peer: ``picows`` (compiled WebSocket framing), ``orjson``, and coalesced Redis writes
packed by ``hiredis``.

    python -m bench.peer_picows <ws_url> <redis_url> <stream>...

Each frame is parsed in picows's callback and its payload kept as the symbol's latest; every
FLUSH_EVERY_S the symbols that changed are written as one buffer of ``SET key value PX ttl``
commands (``hiredis.pack_command``) on one connection, and the replies are counted, not turned
into objects.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import urlsplit

import hiredis
import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.peers import FLUSH_EVERY_S, PEER_TTL_MS, groups, peer_key, stop_on_signals

PEER = "picows"
TTL = str(PEER_TTL_MS).encode()


class Reader(WSListener):
    """Keeps the latest payload per symbol of one connection's frames (pings answered by picows)."""

    def __init__(self, latest: dict[str, Any]) -> None:
        self.latest = latest

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            data = orjson.loads(frame.get_payload_as_memoryview()).get("data")
            if data is not None:
                self.latest[data["s"]] = data
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def read(ws_url: str, streams: list[str], latest: dict[str, Any]) -> None:
    """One connection, until it closes."""
    transport, _ = await ws_connect(lambda: Reader(latest), f"{ws_url}/stream?streams={streams[0]}")
    if len(streams) > 1:
        transport.send(WSMsgType.TEXT, orjson.dumps({"method": "SUBSCRIBE", "params": streams[1:], "id": 1}))
    await transport.wait_disconnected()


async def write(redis_url: str, latest: dict[str, Any]) -> None:
    """Every FLUSH_EVERY_S, one packed write of what changed; wait for as many replies."""
    url = urlsplit(redis_url)
    stream_reader, writer = await asyncio.open_connection(url.hostname, url.port or 6379)
    replies = hiredis.Reader()
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        if not latest:
            continue
        batch = dict(latest)
        latest.clear()
        writer.write(
            b"".join(pack(peer_key(PEER, symbol), orjson.dumps(data)) for symbol, data in batch.items())
        )
        pending = len(batch)
        while pending:
            chunk = await stream_reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            replies.feed(chunk)
            while pending and (reply := replies.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise reply
                pending -= 1


def pack(key: str, value: bytes) -> bytes:
    """``SET key value PX ttl`` in RESP."""
    command: Any = ("SET", key, value, "PX", TTL)  # hiredis's stub types a command as a 1-tuple
    packed: bytes = hiredis.pack_command(command)
    return packed


async def run(ws_url: str, redis_url: str, streams: list[str]) -> None:
    """Read and write until SIGTERM."""
    stop = stop_on_signals()
    latest: dict[str, Any] = {}
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(read(ws_url, group, latest)) for group in groups(streams)
    ]
    tasks.append(asyncio.create_task(write(redis_url, latest)))
    done = asyncio.create_task(stop.wait())
    finished, _ = await asyncio.wait([*tasks, done], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for task in finished:
        task.result()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], sys.argv[3:]))
