"""What a connection sends Binance: evenly spaced messages, and subscriptions that come back.

Both found by the chaos test: (1) three messages at t and three at t + 1.0 s arrive as six in a
second by the exchange's clock, and it closes the connection with 1008; (2) a stream taken back
and wanted again before the exchange answered its UNSUBSCRIBE was never subscribed again.
The connection runs without a socket: a stand-in records what would be sent, and the reader's
handling of the exchange's replies is called as the reader would call it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from messenger.binance import BOOK_TICKER
from messenger.book import Book
from messenger.connection import OPEN, STREAMS_PER_REQUEST, Connection
from messenger.routes import route_for


class FakeSocket:
    """Records each message with the (test) time it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, Any]] = []
        self.now = 0.0

    def send(self, doc: str) -> None:
        self.sent.append((self.now, orjson.loads(doc)))

    def ping(self, payload: str) -> None:
        self.sent.append((self.now, "ping"))


class NoSeeder:
    def request(self, conn: Any, routes: Any) -> None:
        pass


def connection(symbols: list[str]) -> tuple[Connection, FakeSocket]:
    routes = {r.stream: r for r in (route_for(s, BOOK_TICKER) for s in symbols)}
    conn = Connection("ws://127.0.0.1:1", [], routes, Book(5.0), NoSeeder(), ping_interval_s=1000)  # type: ignore[arg-type]
    ws = FakeSocket()
    conn._ws, conn.state = ws, OPEN  # type: ignore[assignment]
    return conn, ws


def pump_until(conn: Connection, ws: FakeSocket, until: float, step: float = 0.01) -> None:
    while ws.now < until:
        conn.pump(ws.now)
        ws.now = round(ws.now + step, 6)


def test_messages_are_spaced_so_no_second_of_any_clock_holds_more_than_three() -> None:
    symbols = [f"S{i}USDT" for i in range(STREAMS_PER_REQUEST * 8)]
    conn, ws = connection(symbols)
    conn.add_streams([route_for(s, BOOK_TICKER).stream for s in symbols])  # 8 SUBSCRIBEs queued
    pump_until(conn, ws, 4.0)
    times = [t for t, _ in ws.sent]
    assert len(times) == 8
    # Any window of one second (closed at both ends, as the exchange may count) holds at most 3.
    assert all(sum(1 for u in times if t <= u <= t + 1.0) <= 3 for t in times)


def reply(conn: Connection, request: dict[str, Any], now: float) -> None:
    """The exchange's answer to one request, handed over as the reader does."""
    conn._reply({"result": None, "id": request["id"]}, now)


def test_a_stream_wanted_again_before_its_unsubscribe_was_answered_is_subscribed_again() -> None:
    conn, ws = connection(["BTCUSDT", "ADXETH"])
    stream = route_for("ADXETH", BOOK_TICKER).stream
    conn.add_streams([stream, route_for("BTCUSDT", BOOK_TICKER).stream])
    pump_until(conn, ws, 0.5)
    [(_, subscribe)] = ws.sent
    reply(conn, subscribe, ws.now)
    assert stream in conn.subscribed

    conn.remove_streams([stream])  # gone idle
    pump_until(conn, ws, 1.0)
    [(_, unsubscribe)] = ws.sent[1:]
    assert unsubscribe["method"] == "UNSUBSCRIBE"
    conn.add_streams([stream])  # asked for again before the exchange answered
    pump_until(conn, ws, 2.0)
    assert len(ws.sent) == 2  # nothing sent: it still counts as subscribed until the answer
    reply(conn, unsubscribe, ws.now)
    pump_until(conn, ws, 3.0)
    [(_, again)] = ws.sent[2:]
    assert (again["method"], again["params"]) == ("SUBSCRIBE", [stream])
    reply(conn, again, ws.now)
    assert stream in conn.subscribed
    key = route_for("ADXETH", BOOK_TICKER).key
    assert key in conn.book.pending_keys(conn)  # carried again: its frames will vouch


@pytest.mark.parametrize("refused", [False, True])
def test_a_stream_wanted_again_before_its_unsubscribe_was_even_sent(refused: bool) -> None:
    conn, ws = connection(["ADXETH"])
    stream = route_for("ADXETH", BOOK_TICKER).stream
    conn.add_streams([stream])
    pump_until(conn, ws, 0.5)
    reply(conn, ws.sent[0][1], ws.now)
    conn.remove_streams([stream])
    conn.add_streams([stream])  # in the same tick: the UNSUBSCRIBE is still queued
    pump_until(conn, ws, 1.5)
    unsubscribe = ws.sent[-1][1]
    assert unsubscribe["method"] == "UNSUBSCRIBE"
    if refused:
        conn._reply({"id": unsubscribe["id"], "error": {"code": 2, "msg": "Invalid request"}}, ws.now)
        assert stream in conn.subscribed  # still streamed to us, and carried
    else:
        reply(conn, unsubscribe, ws.now)
        pump_until(conn, ws, 2.5)
        assert ws.sent[-1][1]["method"] == "SUBSCRIBE"


def test_a_stream_let_go_of_before_its_subscribe_was_answered_is_unsubscribed_once_it_is() -> None:
    """Found by the members benchmark: a member handing streams over right after subscribing them
    stayed subscribed to them for good (the exchange streams what it was asked for; nobody asked it
    to stop), so their frames were read and dropped for the connection's lifetime."""
    conn, ws = connection(["BTCUSDT", "ADXETH"])
    stream, kept = route_for("ADXETH", BOOK_TICKER).stream, route_for("BTCUSDT", BOOK_TICKER).stream
    conn.add_streams([stream, kept])
    pump_until(conn, ws, 0.5)
    [(_, subscribe)] = ws.sent
    conn.remove_streams([stream])  # handed over while the exchange has not answered yet
    pump_until(conn, ws, 1.0)
    assert len(ws.sent) == 1  # nothing to unsubscribe until it is subscribed
    reply(conn, subscribe, ws.now)
    pump_until(conn, ws, 2.0)
    [(_, unsubscribe)] = ws.sent[1:]
    assert (unsubscribe["method"], unsubscribe["params"]) == ("UNSUBSCRIBE", [stream])
    assert conn.subscribed == {stream, kept}  # until the exchange answers
    reply(conn, unsubscribe, ws.now)
    assert conn.subscribed == {kept} and not conn._leaving


def test_a_stream_let_go_of_before_its_subscribe_was_sent_is_never_sent() -> None:
    conn, ws = connection(["ADXETH"])
    stream = route_for("ADXETH", BOOK_TICKER).stream
    conn.add_streams([stream])
    conn.remove_streams([stream])
    pump_until(conn, ws, 2.0)
    assert ws.sent == [] and not conn._leaving
