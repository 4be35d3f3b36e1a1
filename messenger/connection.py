"""One WebSocket connection to Binance's combined-stream endpoint.

websocket-client makes the connection and sends; a thread of its own blocks in ``recv``, cuts
the frames out of what it reads (messenger.frames) and hands every data frame to the book; it never
times out, so the hot path does nothing but read, parse and store. Everything else (pings,
SUBSCRIBE pacing, deciding the connection is dead) is done by the supervisor's thread
through the methods below; websocket-client locks sends, so both threads may send.

With ``WS_TRANSPORT=picows`` the same thread runs an asyncio loop and picows reads the frames
instead (messenger.picows_transport); what is done with each message is the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
import websocket

from messenger.binance import SERVER_SHUTDOWN_EVENT, Fields, MalformedFrame, response_error
from messenger.book import Book
from messenger.frames import read_frames
from messenger.routes import Route
from messenger.seeder import Seeder

logger = logging.getLogger(__name__)

OPCODE_CLOSE = websocket.ABNF.OPCODE_CLOSE
OPCODE_PING = websocket.ABNF.OPCODE_PING

# Binance closes a connection that sends more than 5 messages a second (pings and pongs
# count), by its own clock. A limit of 3 in any rolling second of ours still lets 3 go at t and
# 3 more at t + 1.0, which arrive as 6 within a second whenever the second three travel no slower
# than the first. So messages go evenly spaced instead: at most 3 a second in any window, on
# either clock, give or take the network's jitter; the library's pongs to the server's pings
# (one per 20 s) fit in the rest.
MAX_SENT_PER_S = 3
SEND_SPACING_S = 1.0 / MAX_SENT_PER_S + 0.01
# Binance refuses connect URLs of more than about 8,000 characters; the rest go by SUBSCRIBE.
MAX_URL_LENGTH = 4000
STREAMS_PER_REQUEST = 200
CONNECT_TIMEOUT_S = 10.0

CONNECTING, OPEN, CLOSED = "connecting", "open", "closed"
# How frames are read (settings.ws_transport): websocket-client's Python framing, or picows's
# compiled one (messenger.picows_transport).
WEBSOCKET_CLIENT, PICOWS = "websocket-client", "picows"
# Takes diff depth events: (connection, SYMBOL, fields, monotonic time received).
DiffSink = Callable[[Any, str, Fields, float], None]


class CandleSink(Protocol):
    """Where kline frames also go, and who is told when a kline stream is live (messenger.kline_history)."""

    def frame(self, symbol: str, fields: Fields) -> None: ...

    def streaming(self, symbol: str, interval: str) -> None: ...


_ids = itertools.count(1)
# One text message's payload, received at a monotonic time (Connection._text_handler).
TextHandler = Callable[[bytes, float], None]


class Socket(Protocol):
    """What the supervisor's thread does to an open connection: websocket-client's WebSocket, or
    messenger.picows_transport's stand-in that hands each call to the connection's loop."""

    def send(self, payload: str) -> Any: ...
    def ping(self, payload: str) -> Any: ...
    def send_close(self, status: int = ..., reason: bytes = ...) -> Any: ...
    def abort(self) -> Any: ...


class Connection:
    """A combined-stream connection carrying some streams; read by its own thread."""

    def __init__(
        self,
        base_url: str,
        streams: list[str],
        routes: Mapping[str, Route],
        book: Book,
        seeder: Seeder,
        ping_interval_s: float,
        candles: CandleSink | None = None,
        diffs: DiffSink | None = None,
        transport: str = WEBSOCKET_CLIENT,
    ) -> None:
        self.id = next(_ids)
        self.transport = transport
        self.candles = candles  # where kline frames also go (messenger.kline_history)
        self.diffs = diffs  # where diff depth events go instead of the book (messenger.order_books)
        self.base_url = base_url.rstrip("/")
        self.routes = routes
        self.book = book
        self.seeder = seeder
        self.ping_interval_s = ping_interval_s
        self.streams: dict[str, None] = dict.fromkeys(streams)  # what it should carry
        self.subscribed: set[str] = set()
        self.state = CONNECTING
        self.created_at = time.monotonic()
        self.opened_at: float | None = None
        self.last_heard = self.created_at
        self.subscribed_at: float | None = None  # when its first streams were confirmed
        self.close_code: int | None = None
        self.close_reason = ""
        # A handshake Binance refused: its HTTP status and Retry-After header (429, 418: per IP).
        self.refused_status: int | None = None
        self.retry_after: str | None = None
        self.shutdown_announced = False
        self.frames = 0
        self.kind_frames: dict[str, int] = {}  # market-data frames by stream kind
        self.malformed = 0
        self.unknown = 0
        self.trailing = 0  # frames of a stream let go of, before the exchange stopped it
        self.refused = 0
        self.requests_sent = 0
        self.pings_sent = 0
        self._to_subscribe: deque[str] = deque()
        self._to_unsubscribe: deque[str] = deque()
        self._leaving: set[str] = set()  # unsubscribed: their last frames may still come
        self._subscribing: set[str] = set()  # in a SUBSCRIBE not answered yet
        # Taken by the supervisor's changes of streams and by the reader's handling of replies:
        # whatever their interleaving, a stream the exchange was asked for and is no longer
        # wanted gets its UNSUBSCRIBE (see remove_streams and _reply).
        self._subscriptions = threading.Lock()
        self._requests: dict[int, tuple[str, list[str]]] = {}
        self._request_ids = itertools.count(1)
        self._last_sent = float("-inf")
        self._last_ping = 0.0
        self._ws: Socket | None = None
        self._url_streams: list[str] = []
        self._in_url: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=f"conn-{self.id}", daemon=True)
        book.assign(self, self._keys(streams))

    def __repr__(self) -> str:
        return f"conn {self.id}"

    # -- lifecycle (supervisor thread) ------------------------------------------------

    def start(self) -> None:
        """Connect and read on a new thread."""
        self._url_streams = _fit_url(self.base_url, list(self.streams))
        self._in_url = set(self._url_streams)
        self._to_subscribe.extend(s for s in self.streams if s not in self._in_url)
        self._thread.start()

    @property
    def url(self) -> str:
        """The connect URL: the combined endpoint with as many streams as fit."""
        return _url(self.base_url, self._url_streams)

    def alive(self, now: float, liveness_timeout_s: float) -> bool:
        """Open and heard from within the liveness timeout."""
        return self.state == OPEN and now - self.last_heard <= liveness_timeout_s

    def healthy(self) -> bool:
        """Its subscription was confirmed and the exchange spoke after that."""
        return self.subscribed_at is not None and self.last_heard > self.subscribed_at

    def abort(self, reason: str) -> None:
        """Give up on the connection now (no close handshake: it is presumed dead)."""
        if not self.close_reason:
            self.close_reason = reason
        ws = self._ws
        if ws is not None:
            _abort(ws)
        if self.state == CONNECTING:
            self.state = CLOSED

    def close(self, reason: str) -> None:
        """Close politely (a close frame), for a connection we retire."""
        if not self.close_reason:
            self.close_reason = reason
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.send_close(reason=reason.encode()[:100])
            _abort(ws)

    def join(self, timeout_s: float) -> None:
        """Wait for the reader thread to end."""
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- sending (supervisor thread) --------------------------------------------------

    def add_streams(self, streams: list[str]) -> None:
        """Carry more streams: queued for SUBSCRIBE."""
        added = [s for s in streams if s not in self.streams]
        self.book.assign(self, self._keys(added))
        with self._subscriptions:
            for stream in added:
                self.streams[stream] = None
                self._to_subscribe.append(stream)

    def remove_streams(self, streams: list[str]) -> None:
        """Stop carrying streams: the book lets go of them now, UNSUBSCRIBE follows (for one whose
        SUBSCRIBE is not answered yet, once it is: _reply)."""
        with self._subscriptions:
            gone = [s for s in streams if s in self.streams]
            for stream in gone:
                del self.streams[stream]
                if stream in self.subscribed or stream in self._in_url:
                    self._leaving.add(stream)
                    self._to_unsubscribe.append(stream)
                elif stream in self._subscribing:
                    self._leaving.add(stream)
        self.book.release(self, self._keys(gone))

    def _keys(self, streams: list[str]) -> list[str]:
        routes = self.routes
        return [routes[s].key for s in streams if s in routes]

    def pump(self, now: float) -> None:
        """Send what is due within the message budget: unsubscribes, subscribes, then a ping."""
        if self.state != OPEN:
            return
        for queue, method in ((self._to_unsubscribe, "UNSUBSCRIBE"), (self._to_subscribe, "SUBSCRIBE")):
            while queue and now - self._last_sent >= SEND_SPACING_S:
                batch = [queue.popleft() for _ in range(min(STREAMS_PER_REQUEST, len(queue)))]
                if method == "SUBSCRIBE":
                    # One still subscribed is leaving (its UNSUBSCRIBE queued or unanswered): the
                    # reply to that UNSUBSCRIBE queues it again (see _reply).
                    batch = [s for s in batch if s in self.streams and s not in self.subscribed]
                if batch:
                    self._request(method, batch, now)
        quiet = now - max(self.last_heard, self._last_ping)
        if quiet >= self.ping_interval_s and now - self._last_sent >= SEND_SPACING_S:
            self._send(lambda ws: ws.ping(str(int(time.time() * 1000))), now)
            self._last_ping = now
            self.pings_sent += 1

    def busy(self) -> bool:
        """Requests are queued or unanswered."""
        return bool(self._to_subscribe or self._to_unsubscribe or self._requests)

    def _request(self, method: str, streams: list[str], now: float) -> None:
        rid = next(self._request_ids)
        self._requests[rid] = (method, streams)
        if method == "SUBSCRIBE":
            with self._subscriptions:
                self._subscribing.update(streams)
        doc = orjson.dumps({"method": method, "params": streams, "id": rid}).decode()
        self._send(lambda ws: ws.send(doc), now)
        self.requests_sent += 1
        logger.debug("%s: %s %d streams (id %d)", self, method, len(streams), rid)

    def _send(self, action: Any, now: float) -> None:
        ws = self._ws
        if ws is None:
            return
        self._last_sent = now
        try:
            action(ws)
        except (websocket.WebSocketException, OSError) as exc:
            # The reader thread sees the broken socket too and ends the connection.
            logger.debug("%s: send failed: %s", self, exc)

    # -- reading (its own thread) -----------------------------------------------------

    def _run(self) -> None:
        if self.transport == PICOWS:
            from messenger import picows_transport  # noqa: PLC0415 (only when chosen; it imports this)

            picows_transport.run(self)
            return
        try:
            ws = websocket.create_connection(self.url, timeout=CONNECT_TIMEOUT_S, skip_utf8_validation=True)
        except websocket.WebSocketBadStatusException as exc:
            self._refused(exc.status_code, (exc.resp_headers or {}).get("retry-after"))
            return
        except (websocket.WebSocketException, OSError) as exc:
            self._connect_failed(exc)
            return
        ws.settimeout(None)
        self._opened(ws)
        try:
            self._read(ws)
        except (websocket.WebSocketException, OSError) as exc:
            self._dropped(exc)
        finally:
            self.state = CLOSED
            ws.shutdown()

    # Both transports' reader threads call these.

    def _refused(self, status: int, retry_after: str | None) -> None:
        """The handshake was answered with an HTTP status other than 101."""
        self.refused_status = status
        self.retry_after = retry_after
        self.close_reason = self.close_reason or f"connect refused: HTTP {status}"
        self.state = CLOSED

    def _connect_failed(self, exc: BaseException) -> None:
        self.close_reason = self.close_reason or f"connect failed: {exc}"
        self.state = CLOSED

    def _opened(self, ws: Socket) -> None:
        """The handshake succeeded: the URL's streams are confirmed; before any frame is read."""
        self._ws = ws
        now = time.monotonic()
        self.opened_at = self.last_heard = now
        self.state = OPEN
        logger.info("%s: connected, %d streams in the URL", self, len(self._url_streams))
        self._confirmed(self._url_streams, now)

    def _dropped(self, exc: BaseException) -> None:
        self.close_reason = self.close_reason or f"dropped: {exc or type(exc).__name__}"

    def _read(self, ws: websocket.WebSocket) -> None:
        """Cut frames out of large reads (messenger.frames); websocket-client answers nothing here,
        so pings are answered and a server's close is returned as its own reader would."""
        sock = ws.sock
        if sock is None:
            raise websocket.WebSocketConnectionClosedException("not connected")

        def heard(now: float) -> None:
            self.last_heard = now

        def control(opcode: int, payload: bytes, now: float) -> bool:
            if opcode == OPCODE_PING:
                ws.pong(payload)
            elif opcode == OPCODE_CLOSE:
                self._closed_by_server(payload)
                with contextlib.suppress(websocket.WebSocketException, OSError):
                    ws.send_close()
                return True
            return False  # pongs: proof of life only

        read_frames(sock.recv, self._text_handler(), control, heard)

    def _text_handler(self) -> TextHandler:
        """What is done with every text message (data, replies, events), by either transport."""
        loads = orjson.loads
        routes = self.routes
        on_frame = self.book.on_frame
        kind_frames = self.kind_frames
        candles = self.candles.frame if self.candles is not None else None
        diffs = self.diffs

        def text(raw: bytes, now: float) -> None:
            self.frames += 1
            try:
                msg = loads(raw)
                route = routes.get(msg["stream"])
                data = msg["data"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self._other(raw, now)
                return
            if route is None:
                self._unrouted(msg)
                return
            try:
                order, fields = route.kind.parse(data, route.symbol)
            except MalformedFrame as exc:
                self._malformed(f"{route.stream}: {exc}", raw)
                return
            if route.kind.diff:  # a change to a book kept locally, not a value
                if diffs is not None:
                    diffs(self, route.symbol, fields, now)
            else:
                on_frame(self, route.key, order, fields, now, route.history_key)
            if route.kind.candles and candles is not None:
                candles(route.symbol, fields)
            name = route.kind.name
            kind_frames[name] = kind_frames.get(name, 0) + 1

        return text

    def _other(self, raw: bytes, now: float) -> None:
        """A frame that is not market data: a reply to our request, an event, or garbage."""
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            self._malformed("not a JSON object", raw)
        elif msg.get("e") == SERVER_SHUTDOWN_EVENT:
            self._shutdown_announced()
        elif "id" in msg and ("result" in msg or response_error(msg) is not None):
            self._reply(msg, now)
        else:
            self._malformed("unknown message", raw)

    def _unrouted(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") == "!" + SERVER_SHUTDOWN_EVENT:
            self._shutdown_announced()
            return
        if msg.get("stream") in self._leaving:
            self.trailing += 1  # counted, not logged: expected for a moment after an UNSUBSCRIBE
            return
        # Frames may trail an UNSUBSCRIBE for a moment; anything else is worth a look.
        self.unknown += 1
        if self.unknown <= 5 or self.unknown % 1000 == 0:
            logger.warning("%s: frame for a stream we do not carry: %.80s (%d so far)",
                           self, msg.get("stream"), self.unknown)  # fmt: skip

    def _malformed(self, why: str, raw: bytes) -> None:
        self.malformed += 1
        if self.malformed <= 5 or self.malformed % 1000 == 0:
            logger.warning("%s: skipped a malformed frame (%s): %.120r (%d so far)",
                           self, why, raw, self.malformed)  # fmt: skip

    def _reply(self, msg: dict[str, Any], now: float) -> None:
        request = self._requests.pop(msg["id"], None) if isinstance(msg["id"], int) else None
        if request is None:
            logger.warning("%s: reply to no request of ours: %.200s", self, msg)
            return
        method, streams = request
        problem = response_error(msg)
        if problem is not None:
            self.refused += len(streams)
            logger.warning("%s: %s of %d streams refused: %s", self, method, len(streams), problem)
        with self._subscriptions:
            if method == "SUBSCRIBE":
                self._subscribing.difference_update(streams)
                if problem is not None:
                    self._leaving.difference_update(s for s in streams if s not in self.streams)
                    return
                # Let go of while this SUBSCRIBE was on its way: the exchange streams them now.
                late = [s for s in streams if s not in self.streams]
                if late:
                    self.subscribed.update(late)
                    self._to_unsubscribe.extend(late)
                self._confirmed([s for s in streams if s in self.streams], now)
                logger.info("%s: subscribed %d streams (%d in all)", self, len(streams), len(self.subscribed))
            elif problem is not None:  # still subscribed: those wanted again meanwhile are carried
                self._confirmed([s for s in streams if s in self.streams], now)
            else:
                self.subscribed.difference_update(streams)
                self._leaving.difference_update(streams)
                # Wanted again while they were leaving: their SUBSCRIBE waited for this reply.
                self._to_subscribe.extend(s for s in streams if s in self.streams)

    def _confirmed(self, streams: list[str], since: float) -> None:
        """The exchange streams these to us from ``since`` on: vouch, or seed what is new."""
        self.subscribed.update(streams)
        if self.subscribed_at is None and streams:
            self.subscribed_at = since
        routes = [self.routes[s] for s in streams if s in self.routes]
        if self.candles is not None:
            for route in routes:  # a URL stream let go of while connecting is on its way out here
                if route.kind.candles and route.stream in self.streams:
                    self.candles.streaming(*route.series)
        need = set(self.book.carry(self, [r.key for r in routes], since))
        if need:
            self.seeder.request(self, [r for r in routes if r.key in need])

    def _shutdown_announced(self) -> None:
        if not self.shutdown_announced:
            logger.warning("%s: the server announced a shutdown", self)
        self.shutdown_announced = True

    def _closed_by_server(self, payload: bytes) -> None:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        reason = payload[2:].decode("utf-8", "replace")
        self.close_code = code
        self.close_reason = self.close_reason or f"closed by server ({code} {reason})".strip()


def _abort(ws: Socket) -> None:
    """Shut the connection's socket down, which wakes its reader in ``recv``. websocket-client's
    own abort() does nothing once send_close() has marked it no longer connected: after close(),
    the reader would wait for the server's answering close, forever if none came."""
    sock = getattr(ws, "sock", None)  # websocket-client's; picows's stand-in has none
    if sock is None:
        ws.abort()
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _url(base_url: str, streams: list[str]) -> str:
    return f"{base_url}/stream?streams={'/'.join(streams)}"


def _fit_url(base_url: str, streams: list[str]) -> list[str]:
    """The longest prefix of ``streams`` (at least one) that keeps the URL short enough."""
    length = len(_url(base_url, []))
    fitted: list[str] = []
    for stream in streams:
        length += len(stream) + (1 if fitted else 0)
        if fitted and length > MAX_URL_LENGTH:
            break
        fitted.append(stream)
    return fitted
