"""A connection's frames read by picows (compiled WebSocket framing): ``WS_TRANSPORT=picows``.

The connection's own thread runs one asyncio loop holding its one WebSocket; picows calls back
for every frame, and each text message goes to the same handler websocket-client's reader uses
(``Connection._text_handler``), so only the framing differs. The supervisor's thread sends through
``LoopSocket``, which hands each call to the loop (picows transports belong to their loop).

As with websocket-client: pings are answered here (picows's own answering would hide them from
``last_heard``); a server's close frame is answered and ends the connection; a polite close of
ours waits for the server's close frame, at most ``CONNECT_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from messenger.connection import CLOSED, CONNECT_TIMEOUT_S, SEND_SPACING_S

if TYPE_CHECKING:
    from messenger.connection import Connection

# picows says "Connected"/"Disconnected" at INFO; the messenger logs its own lines for those.
logging.getLogger("picows").setLevel(logging.WARNING)
# Binance's frames are small; a depth snapshot of 5,000 levels a side is well under this.
MAX_FRAME_BYTES = 16 * 1024 * 1024
TEXT, BINARY, CONTINUATION = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
PING, CLOSE = WSMsgType.PING, WSMsgType.CLOSE


class Pacer:
    """Messages out of one connection, at most one per SEND_SPACING_S *as they leave* (on the loop).

    The supervisor spaces its sends when it makes them, but here they only leave when the loop
    runs them: a loop held up (a busy core) would let the queued ones go together, over Binance's
    5 a second. So every message (requests, pings and pongs alike) leaves at least SEND_SPACING_S
    after the one before it, whatever the delays before; the order is kept."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._left_at = float("-inf")  # loop time the last message actually left
        self._waiting = False  # a drain is scheduled

    def __call__(self, send: Callable[..., Any], *args: Any) -> None:
        """Send now if the spacing allows, else when it does (on the loop's thread)."""
        self._queue.append((send, args))
        if not self._waiting:
            self._drain()

    def _drain(self) -> None:
        """Send what may leave now; the next one is due SEND_SPACING_S after the last one *left*
        (not after it was due: a drain the loop ran late would otherwise let the next go early)."""
        self._waiting = False
        while self._queue:
            now = self._loop.time()
            due = self._left_at + SEND_SPACING_S
            if now < due:
                self._waiting = True
                self._loop.call_at(due, self._drain)
                return
            send, args = self._queue.popleft()
            self._left_at = now
            send(*args)


class LoopSocket:
    """The connection's socket as the supervisor's thread sees it: each call runs on the loop.

    Calls after the loop ended do nothing, as sends on a closed websocket-client socket fail
    quietly in ``Connection._send``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: WSTransport, pacer: Pacer) -> None:
        self._loop = loop
        self._transport = transport
        self._pacer = pacer

    def send(self, payload: str) -> None:
        self._call(self._pacer, self._transport.send, TEXT, payload.encode())

    def ping(self, payload: str) -> None:
        self._call(self._pacer, self._transport.send_ping, payload.encode())

    def send_close(self, status: int = WSCloseCode.OK.value, reason: bytes = b"") -> None:
        self._call(self._transport.send_close, WSCloseCode(status), reason)
        # The server answers with its close frame, which ends the connection; if it does not:
        self._call(self._loop.call_later, CONNECT_TIMEOUT_S, self._transport.disconnect, False)

    def abort(self) -> None:
        self._call(self._transport.disconnect, False)

    def _call(self, action: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the connection has ended
            self._loop.call_soon_threadsafe(action, *args)


class Listener(WSListener):
    """Hands a connection's frames to it, on its loop."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop
        self.text = conn._text_handler()
        self.monotonic = time.monotonic
        self.parts: list[bytes] = []  # of a fragmented message
        self.parts_type = TEXT
        self.pacer = Pacer(loop)

    def on_ws_connected(self, transport: WSTransport) -> None:
        # Here, before picows reads any frame after the handshake's response.
        self.conn._opened(LoopSocket(self.loop, transport, self.pacer))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = self.monotonic()
        conn = self.conn
        conn.last_heard = now
        msg_type = frame.msg_type
        if msg_type is TEXT and frame.fin:
            self.text(frame.get_payload_as_bytes(), now)
        elif msg_type is TEXT or msg_type is BINARY or msg_type is CONTINUATION:
            self._fragment(frame, now)
        elif msg_type is PING:
            self.pacer(transport.send_pong, frame.get_payload_as_bytes())
        elif msg_type is CLOSE:
            conn._closed_by_server(frame.get_payload_as_bytes())
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        # pongs: proof of life only

    def _fragment(self, frame: WSFrame, now: float) -> None:
        """A message in several frames: joined, and a text one handled as one."""
        if frame.msg_type is not CONTINUATION:
            self.parts = []
            self.parts_type = frame.msg_type
        self.parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            raw, self.parts = b"".join(self.parts), []
            if self.parts_type is TEXT:
                self.text(raw, now)


def run(conn: Connection) -> None:
    """Connect and read until the connection ends (on the connection's thread)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_session(conn, loop))
    finally:
        conn.state = CLOSED
        loop.close()


async def _session(conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
    try:
        transport, _ = await asyncio.wait_for(
            ws_connect(
                lambda: Listener(conn, loop),
                conn.url,
                websocket_handshake_timeout=CONNECT_TIMEOUT_S,
                enable_auto_pong=False,  # answered by Listener, so pings count as heard
                max_frame_size=MAX_FRAME_BYTES,
                max_redirects=3,  # as websocket-client
            ),
            CONNECT_TIMEOUT_S,
        )
    except WSHandshakeError as exc:
        response = exc.response
        if response is None or response.status == 101:
            conn._connect_failed(exc)
        else:
            conn._refused(int(response.status), response.headers.get("Retry-After"))
        return
    except (WSError, OSError) as exc:  # TimeoutError included
        conn._connect_failed(exc)
        return
    try:
        await transport.wait_disconnected()
    except (WSError, OSError) as exc:
        conn._dropped(exc)
    # A connection that ended with no close frame either way was dropped.
    handshake = transport.close_handshake
    if handshake is None or handshake.recv is None:
        conn._dropped(ConnectionError("Connection to remote host was lost."))
