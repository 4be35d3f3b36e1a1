"""Where the supervisor places streams: pinned ones never share a connection with on-demand ones."""

from __future__ import annotations

import time

import pytest

from contract.settings import Settings
from messenger.binance import KINDS
from messenger.book import Book
from messenger.connection import Connection
from messenger.rest import BinanceRest
from messenger.routes import Route, route_for
from messenger.seeder import Seeder
from messenger.supervisor import Supervisor

# The clock connections are stamped with (a machine up for less than a connect timeout has a small one).
NOW = time.monotonic()


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    """A supervisor whose connections never connect: placement only."""
    monkeypatch.setattr(Connection, "start", lambda self: None)
    settings = Settings.from_env({}, max_streams_per_connection=3, binance_ws_url="ws://127.0.0.1:9")
    book = Book(5.0)
    return Supervisor(settings, book, Seeder(book, BinanceRest("http://127.0.0.1:9")))


def routes(*symbols: str, kind: str = "bookTicker") -> list[Route]:
    return [route_for(s, KINDS[kind]) for s in symbols]


def layout(supervisor: Supervisor) -> list[set[str]]:
    return [set(c.streams) for c in supervisor.conns]


def test_on_demand_streams_get_connections_of_their_own_though_a_pinned_one_has_room(
    supervisor: Supervisor,
) -> None:
    pinned = routes("BTCUSDT")
    supervisor.pin(r.stream for r in pinned)
    supervisor.want(pinned)
    supervisor.tick(NOW)
    supervisor.want(routes("ETHBTC", "BNBBTC"))
    supervisor.tick(NOW)
    assert layout(supervisor) == [{"btcusdt@bookTicker"}, {"ethbtc@bookTicker", "bnbbtc@bookTicker"}]

    supervisor.want(routes("LTCBTC", "NEOBTC", kind="trade"))  # room on the on-demand one first
    supervisor.want(routes("ETHUSDT"))
    supervisor.pin([*supervisor.pinned, "ethusdt@bookTicker"])
    supervisor.tick(NOW)
    assert layout(supervisor) == [
        {"btcusdt@bookTicker", "ethusdt@bookTicker"},
        {"ethbtc@bookTicker", "bnbbtc@bookTicker", "ltcbtc@trade"},
        {"neobtc@trade"},
    ]


def test_pinned_and_on_demand_streams_asked_for_together_are_kept_apart(supervisor: Supervisor) -> None:
    supervisor.pin(["btcusdt@bookTicker", "ethbtc@bookTicker"])
    supervisor.want([*routes("BNBBTC", "BTCUSDT"), *routes("BTCUSDT", kind="trade"), *routes("ETHBTC")])
    supervisor.tick(NOW)
    assert layout(supervisor) == [
        {"btcusdt@bookTicker", "ethbtc@bookTicker"},
        {"bnbbtc@bookTicker", "btcusdt@trade"},
    ]
