"""The whole market of a kind (``<kind>:*``), and the rolling-window tickers: planned, parsed, seeded."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contract.keys import snapshot_key
from messenger.binance import KINDS, MalformedFrame, parse_rolling_ticker, rolling_ticker_from_rest
from messenger.book import Book
from messenger.planner import plan
from messenger.routes import route_for
from messenger.seeder import Seeder

TRADING = frozenset({"BTCUSDT", "ETHBTC", "BNBBTC"})
NOW = 1_000_000.0
IDLE = 300_000.0


def streams(kind: str, *symbols: str) -> set[str]:
    return {f"{s.lower()}@{kind}" for s in symbols}


def test_a_whole_market_demand_brings_every_trading_symbol_of_its_kind() -> None:
    wanted = plan([], False, {"ticker:*": NOW}, TRADING, NOW, IDLE)
    assert set(wanted.routes) == streams("ticker", *TRADING)
    assert wanted.routes["ethbtc@ticker"].key == snapshot_key("ticker", "ethbtc")
    assert wanted.invalid_demand == []
    assert wanted.pinned == set()  # on demand: on connections of their own, released when idle


def test_it_follows_symbols_as_they_start_and_stop_trading() -> None:
    demand = {"bookticker:*": NOW}
    listed = frozenset({"BTCUSDT", "ETHBTC", "NEWUSDT"})  # BNBBTC stopped, NEWUSDT listed
    assert set(plan([], False, demand, listed, NOW, IDLE).routes) == streams("bookTicker", *listed)


def test_it_waits_for_the_symbol_list_and_goes_when_idle() -> None:
    assert plan([], False, {"bookticker:*": NOW}, None, NOW, IDLE).routes == {}
    idle = plan([], False, {"bookticker:*": NOW - IDLE - 1}, TRADING, NOW, IDLE)
    assert (idle.routes, idle.invalid_demand) == ({}, [])


def test_pinned_symbols_are_not_carried_twice_and_the_rest_of_the_market_is_on_demand() -> None:
    wanted = plan(["BTCUSDT"], False, {"bookticker:*": NOW}, TRADING, NOW, IDLE)
    assert set(wanted.routes) == streams("bookTicker", *TRADING)
    assert wanted.pinned == streams("bookTicker", "BTCUSDT")


def test_it_counts_as_one_against_the_cap_as_the_server_counts_it() -> None:
    demand = {"bookticker:*": NOW - 2, "trade:ETHBTC": NOW - 1}
    both = plan([], False, demand, TRADING, NOW, IDLE, max_demand=2)
    assert set(both.routes) == streams("bookTicker", *TRADING) | {"ethbtc@trade"}
    assert both.over_cap == 0
    newest = plan([], False, demand, TRADING, NOW, IDLE, max_demand=1)
    assert (set(newest.routes), newest.over_cap) == ({"ethbtc@trade"}, 1)


def test_only_kinds_seeded_whole_with_one_call_may_be_asked_for_whole() -> None:
    demand = {"trade:*": NOW, "kline_1m:*": NOW, "ticker_1h:*": NOW, "bookticker:*": NOW}
    wanted = plan([], False, demand, TRADING, NOW, IDLE)
    assert set(wanted.routes) == streams("bookTicker", *TRADING)
    assert sorted(wanted.invalid_demand) == ["kline_1m:*", "ticker_1h:*", "trade:*"]


ROLLING_FRAME = {
    "e": "1hTicker", "E": 1672515782136, "s": "BNBBTC", "p": "0.0015", "P": "250.00", "o": "0.0010",
    "h": "0.0025", "l": "0.0010", "c": "0.0025", "w": "0.0018", "v": "10000", "q": "18", "O": 0,
    "C": 1675216573749, "F": 0, "L": 18150, "n": 18151,
}  # fmt: skip


def test_a_rolling_window_frame_parses_to_exact_strings_ordered_by_event_time() -> None:
    order, fields = parse_rolling_ticker(ROLLING_FRAME, "BNBBTC")
    assert order == 1672515782136
    assert fields == {
        "symbol": "BNBBTC", "event_time": 1672515782136, "price_change": "0.0015",
        "price_change_percent": "250.00", "open": "0.0010", "high": "0.0025", "low": "0.0010",
        "close": "0.0025", "weighted_avg_price": "0.0018", "volume": "10000", "quote_volume": "18",
        "open_time": 0, "close_time": 1675216573749, "first_trade_id": 0, "last_trade_id": 18150,
        "trades": 18151,
    }  # fmt: skip
    assert [KINDS[f"ticker_{w}"].stream("BNBBTC") for w in ("1h", "4h", "1d")] == [
        "bnbbtc@ticker_1h", "bnbbtc@ticker_4h", "bnbbtc@ticker_1d"]  # fmt: skip


BROKEN = [{**ROLLING_FRAME, "c": 0.0025}, {**ROLLING_FRAME, "n": "1"}, {"e": "1hTicker"}]


@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_rolling_window_frame_is_malformed(broken: dict[str, Any]) -> None:
    with pytest.raises(MalformedFrame):
        parse_rolling_ticker(broken, "BNBBTC")


REST_ENTRY = {
    "symbol": "BNBBTC", "priceChange": "-8.00000000", "priceChangePercent": "-88.889",
    "weightedAvgPrice": "2.60427807", "openPrice": "9.00000000", "highPrice": "9.00000000",
    "lowPrice": "1.00000000", "lastPrice": "1.00000000", "volume": "187.00000000",
    "quoteVolume": "487.00000000", "openTime": 1641859200000, "closeTime": 1642031999999, "firstId": 0,
    "lastId": 60, "count": 61,
}  # fmt: skip


def test_a_rest_rolling_ticker_fills_the_same_record_as_the_stream() -> None:
    fields = rolling_ticker_from_rest(REST_ENTRY)
    assert set(fields) == set(parse_rolling_ticker(ROLLING_FRAME, "BNBBTC")[1])
    assert (fields["close"], fields["trades"], fields["event_time"]) == ("1.00000000", 61, 1642031999999)
    with pytest.raises(MalformedFrame):
        rolling_ticker_from_rest({"symbol": "BNBBTC"})


class FakeRest:
    """Answers /api/v3/ticker as Binance does, and remembers what was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    def get(self, path: str, params: dict[str, str]) -> Any:
        self.calls.append((path, params))
        return [{**REST_ENTRY, "symbol": s} for s in orjson.loads(params["symbols"])]


def test_rolling_windows_are_seeded_100_symbols_a_call_with_their_window() -> None:
    rest = FakeRest()
    seeder = Seeder(Book(5.0), rest)  # type: ignore[arg-type]
    symbols = [f"S{n:03d}USDT" for n in range(250)]
    seeds = seeder._fetch("ticker_4h", symbols)
    assert set(seeds) == set(symbols)
    asked = [(p, params["windowSize"], len(orjson.loads(params["symbols"]))) for p, params in rest.calls]
    assert asked == [("/api/v3/ticker", "4h", n) for n in (100, 100, 50)]
    order, fields = seeds["S007USDT"]
    assert (order, fields["symbol"], fields["close"]) == (None, "S007USDT", "1.00000000")
    assert route_for("S007USDT", KINDS["ticker_4h"]).key == snapshot_key("ticker_4h", "s007usdt")
