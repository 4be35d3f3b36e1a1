"""Both WS_TRANSPORTs read what an exchange sends alike, in what the simulator never does: a
message split into fragments, a ping between them, then a 1008 close; and a refused handshake.

A small picows server plays the exchange in a thread of its own; the connection under test is the
messenger's own, on each transport, and the test reads what it recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from picows import (
    WSCloseCode,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from messenger.binance import BOOK_TICKER
from messenger.book import Book
from messenger.connection import CLOSED, PICOWS, SEND_SPACING_S, WEBSOCKET_CLIENT, Connection
from messenger.picows_transport import Pacer
from messenger.routes import route_for
from tests.processes import free_port

TICK = b'{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}}'


class NoSeeder:
    def request(self, conn: Any, routes: Any) -> None:
        pass


class Exchange(WSListener):
    """Sends one tick in two fragments with a ping between them, then closes with 1008."""

    def __init__(self, pongs: list[bytes]) -> None:
        self.pongs = pongs

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, TICK[:20], fin=False)
        transport.send_ping(b"hello")
        transport.send(WSMsgType.CONTINUATION, TICK[20:], fin=True)

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type == WSMsgType.PONG:
            self.pongs.append(frame.get_payload_as_bytes())
            transport.send_close(WSCloseCode.POLICY_VIOLATION, b"Too many requests")
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


@pytest.fixture
def exchange() -> Iterator[Callable[..., tuple[int, list[bytes]]]]:
    """Starts the exchange: with a refusal (HTTP status, Retry-After) its handshakes get that."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[asyncio.Server] = []

    def start(refuse: tuple[int, str] | None = None) -> tuple[int, list[bytes]]:
        port, pongs = free_port(), list[bytes]()

        def listener(request: WSUpgradeRequest) -> Any:
            if refuse is None:
                return Exchange(pongs)
            status, retry_after = refuse
            response = WSUpgradeResponse.create_error_response(
                status, extra_headers={"Retry-After": retry_after}
            )
            return WSUpgradeResponseWithListener(response, None)

        server = ws_create_server(listener, "127.0.0.1", port)
        servers.append(asyncio.run_coroutine_threadsafe(server, loop).result(5))
        return port, pongs

    yield start

    async def stop() -> None:
        for server in servers:
            server.close()
            await server.wait_closed()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def connection(port: int, transport: str) -> Connection:
    route = route_for("BTCUSDT", BOOK_TICKER)
    return Connection(
        f"ws://127.0.0.1:{port}", [route.stream], {route.stream: route}, Book(5.0), NoSeeder(),  # type: ignore[arg-type]
        ping_interval_s=1000, transport=transport,
    )  # fmt: skip


def ended(conn: Connection) -> None:
    conn.join(5)  # its reader thread ends with the connection
    assert conn.state == CLOSED


@pytest.mark.parametrize("transport", [WEBSOCKET_CLIENT, PICOWS])
def test_a_fragmented_message_a_ping_and_a_1008_close_are_read_alike(
    exchange: Callable[..., tuple[int, list[bytes]]], transport: str
) -> None:
    port, pongs = exchange()
    conn = connection(port, transport)
    conn.start()
    ended(conn)
    assert (conn.frames, conn.kind_frames, conn.malformed) == (1, {"bookTicker": 1}, 0)
    assert pongs == [b"hello"]  # the ping was answered with its payload
    assert conn.last_heard > conn.opened_at  # type: ignore[operator]
    assert (conn.close_code, conn.close_reason) == (1008, "closed by server (1008 Too many requests)")


@pytest.mark.parametrize("transport", [WEBSOCKET_CLIENT, PICOWS])
def test_a_refused_handshake_gives_its_status_and_retry_after(
    exchange: Callable[..., tuple[int, list[bytes]]], transport: str
) -> None:
    port, _ = exchange(refuse=(429, "7"))
    conn = connection(port, transport)
    conn.start()
    ended(conn)
    assert (conn.refused_status, conn.retry_after) == (429, "7")
    assert conn.close_reason == "connect refused: HTTP 429"
    assert conn.opened_at is None


def test_picows_messages_leave_spaced_though_the_loop_was_held_up() -> None:
    """Sends queued while the connection's loop was busy (a starved core) would leave together,
    over Binance's 5 messages a second: they leave SEND_SPACING_S apart, in order, pongs too;
    and one the loop sent late does not bring the next one forward."""
    loop = asyncio.new_event_loop()
    left: list[tuple[float, str]] = []
    pacer = Pacer(loop)

    def send(what: str) -> None:
        left.append((loop.time(), what))

    def held_up() -> None:
        threading.Event().wait(0.5)  # the loop does nothing else meanwhile

    try:
        loop.call_soon(held_up)
        for what in ("subscribe 1", "subscribe 2", "ping", "pong", "subscribe 3"):
            loop.call_soon(pacer, send, what)  # as LoopSocket queues them from another thread
        # Held up again across the second message's turn: it leaves ~50 ms late.
        late = loop.time() + 0.5 + SEND_SPACING_S - 0.02
        loop.call_at(late, lambda: threading.Event().wait(0.07))
        loop.run_until_complete(asyncio.sleep(5 * SEND_SPACING_S + 0.2))
    finally:
        loop.close()
    assert [what for _, what in left] == ["subscribe 1", "subscribe 2", "ping", "pong", "subscribe 3"]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(left)]
    assert min(gaps) >= SEND_SPACING_S - 0.005, gaps
    in_any_second = max(sum(1 for t, _ in left if start <= t < start + 1.0) for start, _ in left)
    assert in_any_second <= 3
