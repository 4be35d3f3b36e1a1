"""Ingest peer: ``picows`` (compiled WebSocket framing), ``orjson``, and coalesced Redis writes
packed by ``hiredis``.

    python -m bench.peer_picows [--as-they-come] <ws_url> <redis_url> <stream>...

Each frame is parsed in picows's callback and its payload kept as the symbol's latest; every
FLUSH_EVERY_S the symbols that changed are written as one buffer of ``SET key value PX ttl``
commands (``hiredis.pack_command``) on one connection, and the replies are counted, not turned
into objects.

``--as-they-come``: no period; a write leaves as soon as something changed and the write before
it is answered (what arrived meanwhile goes in one buffer). The least latency a Python pipeline
of this design gets into Redis: the freshness benchmark's floor (bench/freshness.py), where the
ingest benchmark's peer trades latency for CPU.
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

    def __init__(self, latest: dict[str, Any], changed: asyncio.Event | None = None) -> None:
        self.latest = latest
        self.changed = changed  # set on every change, when writes go as they come

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            data = orjson.loads(frame.get_payload_as_memoryview()).get("data")
            if data is not None:
                self.latest[data["s"]] = data
                if self.changed is not None:
                    self.changed.set()
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def read(
    ws_url: str, streams: list[str], latest: dict[str, Any], changed: asyncio.Event | None = None
) -> None:
    """One connection, until it closes."""
    transport, _ = await ws_connect(lambda: Reader(latest, changed), f"{ws_url}/stream?streams={streams[0]}")
    if len(streams) > 1:
        transport.send(WSMsgType.TEXT, orjson.dumps({"method": "SUBSCRIBE", "params": streams[1:], "id": 1}))
    await transport.wait_disconnected()


async def write(redis_url: str, latest: dict[str, Any], changed: asyncio.Event | None = None) -> None:
    """Every FLUSH_EVERY_S (with ``changed``: whenever it is set), one packed write of what changed;
    wait for as many replies."""
    url = urlsplit(redis_url)
    stream_reader, writer = await asyncio.open_connection(url.hostname, url.port or 6379)
    replies = hiredis.Reader()
    while True:
        if changed is None:
            await asyncio.sleep(FLUSH_EVERY_S)
        else:
            await changed.wait()
            changed.clear()
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


async def run(ws_url: str, redis_url: str, streams: list[str], as_they_come: bool = False) -> None:
    """Read and write until SIGTERM."""
    stop = stop_on_signals()
    latest: dict[str, Any] = {}
    changed = asyncio.Event() if as_they_come else None
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(read(ws_url, group, latest, changed)) for group in groups(streams)
    ]
    tasks.append(asyncio.create_task(write(redis_url, latest, changed)))
    done = asyncio.create_task(stop.wait())
    finished, _ = await asyncio.wait([*tasks, done], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for task in finished:
        task.result()


AS_THEY_COME = "--as-they-come"


if __name__ == "__main__":
    args = sys.argv[1:]
    as_they_come = args[:1] == [AS_THEY_COME]
    args = args[as_they_come:]
    asyncio.run(run(args[0], args[1], args[2:], as_they_come))
