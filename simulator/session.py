"""One client WebSocket connection, with Binance's rules and the faults tests switch on.

Rules enforced: 5 incoming messages per second (pings, pongs and JSON requests all count;
over it: close 1008 "Too many requests"), 1,024 streams, a ping every 20 s that must be
answered with its own payload within 60 s, and a 24 h lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from simulator.depth_feed import DiffFault
from simulator.exchange import Exchange
from simulator.streams import parse_stream

logger = logging.getLogger(__name__)

FLOOD_HIGH_WATER = 4096
FLOOD_LOW_WATER = 1024
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def error(code: int, msg: str, request_id: Any) -> dict[str, Any]:
    """An error reply in the nested shape Binance sends on the wire."""
    return {"error": {"code": code, "msg": msg}, "id": request_id}


class Session:
    """A connection from a client: its streams, counters, and fault switches."""

    def __init__(
        self,
        exchange: Exchange,
        request: web.Request,
        ws: web.WebSocketResponse,
        combined: bool,
    ) -> None:
        self.exchange = exchange
        self.config = exchange.config
        self.request = request
        self.ws = ws
        self.id = exchange.new_session_id()
        self.path = request.path_qs
        self.combined = combined
        self.streams: dict[str, None] = {}
        self.opened_at = time.monotonic()
        self.outbox: deque[bytes] = deque()
        # Frames to time when written (simulator.probes), by identity: nearly always empty.
        self.watched: dict[int, tuple[bytes, Callable[[], None]]] = {}
        self._has_data = asyncio.Event()
        self._message_times: deque[float] = deque()
        self._pings_out: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stalled = False
        self.pong_delay_s = 0.0
        self.diff_faults: dict[str, DiffFault] = {}  # symbol -> a diff depth fault armed for it
        self.frames_sent = 0
        self.frames_dropped = 0
        self.messages_received = 0
        self.requests: list[dict[str, Any]] = []
        self.pings_sent = 0
        self.pongs_received = 0
        self.pings_received = 0
        self.violations: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""

    # -- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until either side ends it."""
        self.exchange.register(self)
        self.spawn(self._writer())
        self.spawn(self._pinger())
        try:
            await self._receive_loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self.close_code is None:
                self.close_code = self.ws.close_code
                self.close_reason = self.close_reason or "closed by client"
            self.exchange.unregister(self)
            logger.info("sim conn %d: closed (%s %s)", self.id, self.close_code, self.close_reason)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, code: int, reason: str) -> None:
        """Close with a close frame, as Binance does for limits and at the 24 h mark."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        await self.ws.close(code=code, message=reason.encode())

    def drop(self) -> None:
        """Cut the TCP connection without a close frame."""
        self.close_code, self.close_reason = 1006, "dropped"
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # -- sending ----------------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        """Queue a frame for the client."""
        if self.stalled:
            self.frames_dropped += 1
            return
        self.outbox.append(frame)
        if len(self.outbox) > self.config.outbox_limit:
            self.outbox.clear()
            self.watched.clear()
            self.violations.append("slow consumer")
            self.spawn(self.close(1008, "Too slow"))
        self._has_data.set()

    def watch(self, frame: bytes, on_write: Callable[[], None]) -> None:
        """Call ``on_write`` just before this queued ``frame`` (the object itself) is written."""
        self.watched[id(frame)] = (frame, on_write)

    def backlogged(self) -> bool:
        """Too many frames queued: a flood must wait for this client."""
        return len(self.outbox) > FLOOD_HIGH_WATER

    async def send_json(self, doc: dict[str, Any]) -> None:
        """Send a JSON reply or event at once (ahead of queued market data)."""
        await self.ws.send_frame(orjson.dumps(doc), WSMsgType.TEXT)

    async def _writer(self) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self._write_outbox()

    async def _write_outbox(self) -> None:
        outbox, send = self.outbox, self.ws.send_frame
        while True:
            if not outbox:
                self._has_data.clear()
                await self._has_data.wait()
                continue
            frame = outbox.popleft()
            if self.watched:
                watched = self.watched.pop(id(frame), None)
                if watched is not None and watched[0] is frame:
                    watched[1]()
            await send(frame, WSMsgType.TEXT)
            self.frames_sent += 1
            if len(outbox) == FLOOD_LOW_WATER or not outbox:
                self.exchange.notify_drained()

    async def _pinger(self) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self._ping_and_age()

    async def _ping_and_age(self) -> None:
        tick = min(0.25, self.config.ping_interval_s / 4)
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - self.opened_at >= self.config.max_connection_age_s:
                await self.close(1000, "connection lifetime reached")
                return
            if self.stalled:
                continue
            if self._pings_out and now - min(self._pings_out.values()) > self.config.pong_timeout_s:
                self.violations.append("no pong")
                await self.close(1008, "Pong timeout")
                return
            if now - last_ping >= self.config.ping_interval_s:
                payload = str(int(time.time() * 1000)).encode()
                self._pings_out[payload] = now
                self.pings_sent += 1
                last_ping = now
                await self.ws.ping(payload)

    # -- receiving --------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        async for msg in self.ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if self._over_limit():
                self.violations.append("too many requests")
                await self.close(1008, "Too many requests")
                break
            if msg.type is WSMsgType.PING:
                self.pings_received += 1
                if self.pong_delay_s:
                    self.spawn(self._pong(msg.data))
                elif not self.stalled:
                    await self.ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                self._on_pong(msg.data)
            elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                reply = self.handle_request(msg.data)
                if not self.stalled:
                    await self.send_json(reply)

    def _over_limit(self) -> bool:
        now = time.monotonic()
        times = self._message_times
        times.append(now)
        self.messages_received += 1
        while now - times[0] > 1.0:
            times.popleft()
        return len(times) > self.config.max_messages_per_s

    async def _pong(self, payload: bytes) -> None:
        await asyncio.sleep(self.pong_delay_s)
        if not self.stalled and not self.ws.closed:
            await self.ws.pong(payload)

    def _on_pong(self, payload: bytes) -> None:
        sent = self._pings_out.pop(bytes(payload), None)
        if sent is None:
            return  # unsolicited: allowed, but it keeps nothing alive
        self.pongs_received += 1
        for other, at in list(self._pings_out.items()):
            if at <= sent:
                del self._pings_out[other]

    # -- JSON requests ----------------------------------------------------------------

    def handle_request(self, data: str | bytes) -> dict[str, Any]:
        """Answer a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / *_PROPERTY request."""
        self.exchange.control_messages += 1
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError:
            return error(3, "Invalid JSON: expected value at line 1 column 1", None)
        if not isinstance(req, dict):
            return error(2, "Invalid request: expected a JSON object", None)
        rid = req.get("id", ...)
        if not _valid_id(rid):
            return error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = req.get("method")
        if method is None:
            return error(2, "Invalid request: missing field `method` at line 1 column 1", rid)
        if method not in METHODS:
            expected = ", ".join(f"`{m}`" for m in METHODS)
            return error(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", rid)
        params = req.get("params", [])
        self.requests.append({"method": method, "params": params, "id": rid})
        if not isinstance(params, list):
            return error(2, "Invalid request: invalid params", rid)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._subscription(method, params, rid)
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                return error(2, "Invalid request: too many parameters", rid)
            return {"result": list(self.streams), "id": rid}
        return self._property(method, params, rid)

    def _subscription(self, method: str, params: list[Any], rid: Any) -> dict[str, Any]:
        if not params or not all(isinstance(p, str) and parse_stream(p) for p in params):
            return error(2, "Invalid request: invalid stream", rid)
        if method == "SUBSCRIBE":
            new = [p for p in params if p not in self.streams]
            if len(self.streams) + len(new) > self.config.max_streams:
                return error(4, "Too many subscriptions", rid)
            for stream in new:
                self.exchange.subscribe(self, stream)
        else:
            for stream in params:
                self.exchange.unsubscribe(self, stream)
        return {"result": None, "id": rid}

    def _property(self, method: str, params: list[Any], rid: Any) -> dict[str, Any]:
        want = 2 if method == "SET_PROPERTY" else 1
        if len(params) > want:
            return error(2, "Invalid request: too many parameters", rid)
        if not params or not isinstance(params[0], str):
            return error(2, "Invalid request: property name must be a string", rid)
        if params[0] != "combined":
            return error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return {"result": self.combined, "id": rid}
        if len(params) < 2 or not isinstance(params[1], bool):
            return error(1, "Invalid value type: expected Boolean", rid)
        self.combined = params[1]
        return {"result": None, "id": rid}

    # -- faults -----------------------------------------------------------------------

    def stall(self, stalled: bool = True) -> None:
        """Stop sending anything and stop answering pings; the connection stays open."""
        self.stalled = stalled
        if stalled:
            self.outbox.clear()
            self.watched.clear()

    async def server_shutdown(self, grace_s: float) -> None:
        """Announce a shutdown with Binance's event, then close after a grace period."""
        event = {"e": "serverShutdown", "E": int(time.time() * 1000)}
        if self.combined:
            await self.send_json({"stream": "!serverShutdown", "data": event})
        else:
            await self.send_json(event)
        await asyncio.sleep(grace_s)
        with contextlib.suppress(ConnectionError):
            await self.close(1000, "server shutdown")

    def describe(self) -> dict[str, Any]:
        """What a test may want to know about this connection."""
        return {
            "id": self.id,
            "path": self.path,
            "combined": self.combined,
            "streams": list(self.streams),
            "age_s": round(time.monotonic() - self.opened_at, 3),
            "frames_sent": self.frames_sent,
            "frames_dropped": self.frames_dropped,
            "messages_received": self.messages_received,
            "requests": self.requests[-50:],
            "request_count": len(self.requests),
            "pings_sent": self.pings_sent,
            "pongs_received": self.pongs_received,
            "pings_received": self.pings_received,
            "stalled": self.stalled,
            "diff_faults": {symbol: fault.name for symbol, fault in self.diff_faults.items()},
            "violations": self.violations,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
        }


def _valid_id(rid: Any) -> bool:
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -(2**63) <= rid < 2**63
    return isinstance(rid, str) and len(rid) <= 36 and rid.isalnum()
