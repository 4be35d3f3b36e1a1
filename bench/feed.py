"""A cheap bookTicker feed for capacity runs: Binance's frames, pre-encoded, as fast as a reader reads.

    python -m bench.feed [--host 127.0.0.1] [--port 9443] [--ping-interval-s 20] [--no-flood]

The simulator spends about a core making and sending 55-115k frames a second, so a fast reader
measures the simulator. This feed sends the same frames (bench/tapes.py: the combined-stream
format of ``<symbol>@bookTicker``, each symbol's ``u`` going up by one a frame) for a fraction of
a microsecond each: frames are pieces made in advance, written a few hundred at a time, as fast as
each connection's reader takes them (asyncio's write flow control), rotating over its symbols.

As Binance: ``/stream?streams=a/b`` (combined), ``/ws/<stream>[/...]`` and ``/ws`` (raw);
SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY and GET_PROPERTY ``combined`` answered;
a ping every ``--ping-interval-s``, client pings answered, the close handshake. Only bookTicker
streams carry frames; other streams are accepted and stay silent. No limit is enforced.

Control, plain HTTP on the same port (what a benchmark needs to judge a reader):

- ``GET /_feed/state``: ``flood``, ``frames_sent`` (all connections, ever), ``streams`` (subscribed
  on open connections), ``connections``;
- ``GET /_feed/last``: each symbol's last payload sent, ``{"BTCUSDT": {"u": ..., "s": ...}}``;
- ``POST /_feed/flood?on=1`` or ``?on=0``: send frames, or stop (pings and replies go on).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from bench.tapes import Entry, Tape, batch, entry, ws_header

logger = logging.getLogger("bench.feed")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BATCH_FRAMES = 256  # frames a write
BATCHES_A_TURN = 8  # writes before the event loop's other work (other connections, requests)
# What may sit between the feed and a reader: this process's buffer and the kernel's send buffer,
# kept small so that frames sent are frames read, give or take a couple of thousand, at any moment
# (the kernel's default grows to megabytes: seconds of a slow reader's frames, counted as read).
WRITE_HIGH_WATER = 1 << 16
SEND_BUFFER = 1 << 16
MAX_REQUEST_HEAD = 1 << 16  # a connect URL may carry a thousand streams
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Feed:
    """The tapes, the flood switch and the open connections of one feed process."""

    def __init__(self, ping_interval_s: float, flood: bool = True) -> None:
        self.ping_interval_s = ping_interval_s
        self.flood = flood
        self.tapes: dict[str, Tape] = {}
        self.connections: dict[int, Connection] = {}
        self.closed_frames = 0  # frames sent over connections now closed
        self._next_id = 1

    def tape(self, stream: str) -> Tape | None:
        """The tape of a bookTicker stream (made the first time), None for any other stream."""
        symbol, _, kind = stream.partition("@")
        if kind != "bookTicker" or not symbol:
            return None
        tape = self.tapes.get(symbol.upper())
        if tape is None:
            tape = self.tapes[symbol.upper()] = Tape(symbol)
        return tape

    def new_id(self) -> int:
        """A fresh connection id."""
        self._next_id += 1
        return self._next_id - 1

    def set_flood(self, on: bool) -> None:
        """Start or stop sending frames on every connection."""
        self.flood = on
        if on:
            for connection in self.connections.values():
                connection.pump()

    def state(self) -> dict[str, Any]:
        """What ``GET /_feed/state`` answers."""
        open_ = list(self.connections.values())
        return {
            "flood": self.flood,
            "frames_sent": self.closed_frames + sum(c.frames_sent for c in open_),
            "streams": sum(len(c.streams) for c in open_),
            "connections": [c.describe() for c in open_],
        }

    def last(self) -> dict[str, Any]:
        """What ``GET /_feed/last`` answers."""
        return {symbol: data for symbol, tape in self.tapes.items() if (data := tape.data()) is not None}


class Connection(asyncio.Protocol):
    """One client: an HTTP request first, then, if it asked for one, a WebSocket."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.id = 0
        self.path = ""
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.closing = False
        self.paused = False
        self.scheduled = False
        self.combined = True
        self.streams: dict[str, Entry | None] = {}
        self.entries: list[Entry] = []
        self.cursor = 0
        self.frames_sent = 0
        self.fragments: list[bytes] = []
        self.ping_handle: asyncio.TimerHandle | None = None

    # -- asyncio ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.ping_handle is not None:
            self.ping_handle.cancel()
        if self.feed.connections.pop(self.id, None) is not None:
            self.feed.closed_frames += self.frames_sent

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            self._request_head()
        if self.upgraded:
            self._frames()

    # -- sending ----------------------------------------------------------------------

    def pump(self) -> None:
        """Write frames until the reader's buffers are full, a turn at a time."""
        self.scheduled = False
        if self.closing or self.paused or not self.feed.flood or not self.entries or self.transport is None:
            return
        for _ in range(BATCHES_A_TURN):
            frames, self.cursor = batch(self.entries, self.cursor, BATCH_FRAMES)
            self.transport.write(frames)
            self.frames_sent += BATCH_FRAMES
            if self.transport.get_write_buffer_size() > WRITE_HIGH_WATER:  # paused: resume_writing pumps
                return
        self.scheduled = True
        asyncio.get_running_loop().call_soon(self._pump_if_scheduled)

    def _pump_if_scheduled(self) -> None:
        if self.scheduled:
            self.pump()

    def send(self, opcode: int, payload: bytes) -> None:
        """One whole frame, between two batches."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_header(opcode, len(payload)) + payload)

    def _ping(self) -> None:
        self.send(OP_PING, str(int(time.time() * 1000)).encode())
        self.ping_handle = asyncio.get_running_loop().call_later(self.feed.ping_interval_s, self._ping)

    # -- the opening request ----------------------------------------------------------

    def _request_head(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_REQUEST_HEAD:
                self._answer(431, {"error": "request head too large"})
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        method, target, *_ = (*head[0].split(" "), "", "")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        url = urlsplit(target)
        if url.path.startswith("/_feed/"):
            self._control(method, url.path, parse_qs(url.query))
        elif headers.get("upgrade", "").lower() == "websocket" and "sec-websocket-key" in headers:
            self._upgrade(url.path, url.query, headers["sec-websocket-key"])
        else:
            self._answer(404, {"error": f"no route {url.path}"})

    def _upgrade(self, path: str, query: str, key: str) -> None:
        if path == "/stream":
            names = [unquote(n).replace(" ", "+") for n in parse_qs(query).get("streams", [""])[0].split("/")]
        elif path == "/ws" or path.startswith("/ws/"):
            self.combined = False
            names = [unquote(n) for n in path[len("/ws/") :].split("/")]
        else:
            self._answer(404, {"error": f"no route {path}"})
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())  # noqa: S324 (RFC 6455)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded, self.id, self.path = True, self.feed.new_id(), path
        self.feed.connections[self.id] = self
        self.subscribe([n for n in names if n])
        self.ping_handle = asyncio.get_running_loop().call_later(self.feed.ping_interval_s, self._ping)

    def _control(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        if (method, path) == ("GET", "/_feed/state"):
            self._answer(200, self.feed.state())
        elif (method, path) == ("GET", "/_feed/last"):
            self._answer(200, self.feed.last())
        elif (method, path) == ("POST", "/_feed/flood"):
            self.feed.set_flood(query.get("on", ["1"])[0] not in ("0", "false"))
            self._answer(200, {"flood": self.feed.flood})
        else:
            self._answer(404, {"error": f"no route {method} {path}"})

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc)
        assert self.transport is not None
        self.transport.write(
            f"HTTP/1.1 {status} -\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        self.closing = True
        self.transport.close()

    # -- the client's frames ----------------------------------------------------------

    def _frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2 and not self.closing:
            fin, opcode, masked, length = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
            at = 2
            if length >= 126:
                width = 2 if length == 126 else 8
                if len(buf) < at + width:
                    return
                length, at = int.from_bytes(buf[at : at + width], "big"), at + width
            mask = bytes(buf[at : at + 4]) if masked else b""
            at += len(mask)
            if len(buf) < at + length:
                return
            payload = unmask(bytes(buf[at : at + length]), mask)
            del buf[: at + length]
            self._frame(opcode, bool(fin), payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == OP_PING:
            self.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.send(OP_CLOSE, payload[:2])
            self.closing = True
            assert self.transport is not None
            self.transport.close()
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            self.fragments.append(payload)
            if fin:
                message, self.fragments = b"".join(self.fragments), []
                self.send(OP_TEXT, orjson.dumps(self.request(message)))

    def request(self, message: bytes) -> dict[str, Any]:
        """The answer to a JSON request, in Binance's shapes."""
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            return {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        rid = req.get("id") if isinstance(req, dict) else None
        method = req.get("method") if isinstance(req, dict) else None
        params = req.get("params", []) if isinstance(req, dict) else []
        if method == "SUBSCRIBE" and isinstance(params, list):
            self.subscribe([str(p) for p in params])
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            self.unsubscribe([str(p) for p in params])
        elif method == "LIST_SUBSCRIPTIONS":
            return {"result": list(self.streams), "id": rid}
        elif method == "GET_PROPERTY":
            return {"result": self.combined, "id": rid}
        elif method == "SET_PROPERTY" and len(params) == 2 and isinstance(params[1], bool):
            self.combined = params[1]
            self._rebuild()
        else:
            return {"error": {"code": 2, "msg": "Invalid request"}, "id": rid}
        return {"result": None, "id": rid}

    def subscribe(self, names: list[str]) -> None:
        """Add streams; frames start at once if the flood is on."""
        for name in names:
            if name not in self.streams:
                tape = self.feed.tape(name)
                self.streams[name] = None if tape is None else entry(tape, self.combined)
        self._rebuild()
        self.pump()

    def unsubscribe(self, names: list[str]) -> None:
        """Remove streams."""
        for name in names:
            self.streams.pop(name, None)
        self._rebuild()

    def _rebuild(self) -> None:
        tapes = [e[0] for e in self.streams.values() if e is not None]
        self.entries = [entry(tape, self.combined) for tape in tapes]
        self.cursor = 0

    def describe(self) -> dict[str, Any]:
        """One connection in ``/_feed/state``."""
        return {
            "id": self.id,
            "path": self.path,
            "streams": len(self.streams),
            "frames_sent": self.frames_sent,
        }


def unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload, unmasked (RFC 6455 5.3)."""
    if not mask or not payload:
        return payload
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")


async def serve(host: str, port: int, feed: Feed) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(feed), host, port, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info("feed: listening on ws://%s:%d", host, port)
    async with server:
        await stop.wait()
    for connection in list(feed.connections.values()):
        if connection.transport is not None:
            connection.transport.abort()


def main(argv: list[str] | None = None) -> int:
    """Run a feed."""
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--ping-interval-s", type=float, default=20.0)
    parser.add_argument("--no-flood", action="store_true", help="start with the flood off")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.host, args.port, Feed(args.ping_interval_s, flood=not args.no_flood)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
