"""One client of the cheap feed (bench/feed.py): an HTTP request first (a control call, or an
upgrade), then, on a WebSocket, frames (as fast as it reads them, or at its share of the feed's
pace) and answers to its requests."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from bench import wire
from bench.tapes import Entry, batch, entry, frame

if TYPE_CHECKING:
    from bench.feed import Feed

BATCH_FRAMES = 256  # frames a write
BATCHES_A_TURN = 8  # writes before the event loop's other work (other connections, requests)
# What may sit between the feed and a reader: this process's buffer and the kernel's send buffer,
# kept small so that frames sent are frames read, give or take a couple of thousand, at any moment
# (the kernel's default grows to megabytes: seconds of a slow reader's frames, counted as read).
WRITE_HIGH_WATER = 1 << 16
SEND_BUFFER = 1 << 16
MAX_REQUEST_HEAD = 1 << 16  # a connect URL may carry a thousand streams


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
        self.by_symbol: dict[str, Entry] = {}
        self.cursor = 0
        self.credit = 0.0  # frames due on a paced feed, not sent yet
        self.frames_skipped = 0  # frames due on a paced feed while the reader was behind
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
        if self.feed.rate:  # paced: the feed's ticks send (Feed.pace)
            return
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

    def paced(self, due: float) -> None:
        """Send the frames now due on a paced feed (``due``: this tick's share, a fraction of a frame
        carried over); a reader whose buffers are full skips them."""
        self.credit += due
        if self.paused or self.closing or self.transport is None:
            self.frames_skipped += int(self.credit)
            self.credit -= int(self.credit)
            return
        frames = int(self.credit)
        if frames:
            self.credit -= frames
            buffer, self.cursor = batch(self.entries, self.cursor, frames)
            self.transport.write(buffer)
            self.frames_sent += frames

    def carries(self, symbol: str) -> bool:
        """Whether a bookTicker stream of ``symbol`` is subscribed here."""
        return symbol in self.by_symbol

    def write_update(self, symbol: str, u: int) -> None:
        """The frame of ``symbol`` with update id ``u``, now (behind whatever is buffered)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(self.by_symbol[symbol], u))
            self.frames_sent += 1

    def send(self, opcode: int, payload: bytes) -> None:
        """One whole frame, between two batches."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.ws_header(opcode, len(payload)) + payload)

    def _ping(self) -> None:
        self.send(wire.OP_PING, str(int(time.time() * 1000)).encode())
        self.ping_handle = asyncio.get_running_loop().call_later(self.feed.ping_interval_s, self._ping)

    # -- the opening request ----------------------------------------------------------

    def _request_head(self) -> None:
        head = wire.take_head(self.buffer)
        if head is None:
            if len(self.buffer) > MAX_REQUEST_HEAD:
                self._answer(431, {"error": "request head too large"})
            return
        method, target, headers = head
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
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + wire.accept_key(key) + b"\r\n\r\n"
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
        elif (method, path) == ("POST", "/_feed/probe"):
            symbol = query.get("symbol", [""])[0]
            sent = self.feed.probe(symbol)
            if sent is None:
                self._answer(404, {"error": f"no connection carries {symbol or 'no symbol'}@bookTicker"})
            else:
                self._answer(200, sent)
        else:
            self._answer(404, {"error": f"no route {method} {path}"})

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(wire.http_answer(status, orjson.dumps(doc)))
        self.closing = True
        self.transport.close()

    # -- the client's frames ----------------------------------------------------------

    def _frames(self) -> None:
        while not self.closing and (frame := wire.take_frame(self.buffer)) is not None:
            self._frame(*frame)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == wire.OP_PING:
            self.send(wire.OP_PONG, payload)
        elif opcode == wire.OP_CLOSE:
            self.send(wire.OP_CLOSE, payload[:2])
            self.closing = True
            assert self.transport is not None
            self.transport.close()
        elif opcode in (wire.OP_TEXT, wire.OP_BINARY, wire.OP_CONT):
            self.fragments.append(payload)
            if fin:
                message, self.fragments = b"".join(self.fragments), []
                self.send(wire.OP_TEXT, orjson.dumps(self.request(message)))

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
        self.by_symbol = {e[0].symbol: e for e in self.entries}
        self.cursor = 0

    def describe(self) -> dict[str, Any]:
        """One connection in ``/_feed/state``."""
        return {
            "id": self.id,
            "path": self.path,
            "streams": len(self.streams),
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
        }
