"""The kept candles hear from the connection when a kline stream is live, and only then.

A series is seeded over REST once the exchange streams its klines to us (messenger.kline_history):
seeded before, a candle closing before the subscription took hold never comes. These drive the
real supervisor and connection with no socket, calling the reader's steps by hand.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from contract.settings import Settings
from messenger.binance import BOOK_TICKER, KINDS
from messenger.book import Book
from messenger.connection import Connection
from messenger.routes import route_for
from messenger.supervisor import Supervisor

KLINE = route_for("ETHBTC", KINDS["kline_1s"])
PINNED = route_for("BTCUSDT", BOOK_TICKER)


class NoSeeder:
    def __init__(self) -> None:
        self.rest = SimpleNamespace(ip_wait_until=0.0)

    def request(self, conn: Any, routes: Any) -> None:
        pass


class Candles:
    """What a connection tells the kept candles."""

    def __init__(self) -> None:
        self.live: list[tuple[str, str]] = []

    def frame(self, symbol: str, fields: Any) -> None:
        pass

    def streaming(self, symbol: str, interval: str) -> None:
        self.live.append((symbol, interval))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[Supervisor, Candles]:
    real_start = Connection.start

    def start(conn: Connection) -> None:  # its URL, no socket: we play the reader
        conn._thread = SimpleNamespace(start=lambda: None, is_alive=lambda: False)  # type: ignore[assignment]
        real_start(conn)

    monkeypatch.setattr(Connection, "start", start)
    candles, seeder = Candles(), NoSeeder()
    book = Book(liveness_timeout_s=5.0)
    supervisor = Supervisor(Settings.from_env({}), book, seeder, candles=candles)  # type: ignore[arg-type]
    return supervisor, candles


def test_a_kline_stream_is_live_when_its_subscription_is_confirmed_not_when_it_is_sent(
    world: tuple[Supervisor, Candles],
) -> None:
    supervisor, candles = world
    supervisor.want([PINNED])
    supervisor.tick(time.monotonic())
    [conn] = supervisor.conns
    conn._confirmed(list(conn.streams), time.monotonic())  # open: the URL's stream
    supervisor.want([KLINE])
    supervisor.tick(time.monotonic())
    assert KLINE.stream in conn.streams and candles.live == []  # asked for, not yet answered
    conn._confirmed([KLINE.stream], time.monotonic())
    assert candles.live == [("ETHBTC", "1s")]


def test_a_url_kline_stream_moved_off_a_connection_while_it_connected_is_not_live_there(
    world: tuple[Supervisor, Candles],
) -> None:
    """Its handshake confirms the URL it was opened with; a stream taken off it meanwhile (still
    carried, elsewhere) is on its way out here, and is live when its new place confirms it."""
    supervisor, candles = world
    supervisor.want([PINNED, KLINE])
    supervisor.tick(time.monotonic())
    [conn] = supervisor.conns
    assert KLINE.stream in conn._url_streams
    conn.remove_streams([KLINE.stream])
    assert KLINE.stream in supervisor.routes
    conn._confirmed(conn._url_streams, time.monotonic())  # what _opened does
    assert candles.live == []
