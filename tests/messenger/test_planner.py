"""Which streams the messenger carries: pinned, --all, on demand, idle, listings."""

from __future__ import annotations

from contract.keys import snapshot_key
from contract.trade_history import tail_key
from messenger.catalog import statuses_of
from messenger.planner import plan

TRADING = frozenset({"BTCUSDT", "ETHBTC", "BNBBTC"})
NOW = 1_000_000.0
IDLE = 300_000.0


def streams(*symbols: str) -> set[str]:
    return {f"{s.lower()}@bookTicker" for s in symbols}


def test_pinned_symbols_are_streamed_before_the_symbol_list_is_known() -> None:
    assert set(plan(["BTCUSDT", "NOPE"], False, {}, None, NOW, IDLE).routes) == streams("BTCUSDT", "NOPE")


def test_pinned_symbols_that_do_not_trade_are_left_out_and_reported() -> None:
    wanted = plan(["BTCUSDT", "LUNAUST"], False, {}, TRADING, NOW, IDLE)
    assert set(wanted.routes) == streams("BTCUSDT")
    assert wanted.not_trading == ["LUNAUST"]


def test_all_means_every_trading_symbol() -> None:
    assert set(plan(["BTCUSDT"], True, {}, TRADING, NOW, IDLE).routes) == streams(*TRADING)
    assert set(plan([], True, {}, None, NOW, IDLE).routes) == set()  # nothing to go on yet


def test_demand_within_the_idle_window_is_streamed_and_older_demand_is_not() -> None:
    demand = {"bookticker:ETHBTC": NOW - 1_000, "bookticker:BNBBTC": NOW - IDLE - 1}
    wanted = plan(["BTCUSDT"], False, demand, TRADING, NOW, IDLE)
    assert set(wanted.routes) == streams("BTCUSDT", "ETHBTC")
    assert wanted.routes["ethbtc@bookTicker"].key == snapshot_key("bookticker", "ethbtc")


def test_a_pinned_symbol_is_never_idle() -> None:
    demand = {"bookticker:BTCUSDT": NOW - 10 * IDLE}
    assert set(plan(["BTCUSDT"], False, demand, TRADING, NOW, IDLE).routes) == streams("BTCUSDT")


def test_demand_that_names_nothing_streamable_is_reported_for_removal() -> None:
    demand = {"bookticker:NOPEUSDT": NOW, "nonsense": NOW, "candles:BTCUSDT": NOW, "bookticker:ETHBTC": NOW}
    wanted = plan([], False, demand, TRADING, NOW, IDLE)
    assert set(wanted.routes) == streams("ETHBTC")
    assert sorted(wanted.invalid_demand) == ["bookticker:NOPEUSDT", "candles:BTCUSDT", "nonsense"]


def test_demand_waits_for_the_symbol_list() -> None:
    wanted = plan([], False, {"bookticker:ETHBTC": NOW}, None, NOW, IDLE)
    assert (wanted.routes, wanted.invalid_demand) == ({}, [])


def test_a_symbol_that_stops_trading_is_dropped_even_if_asked_for() -> None:
    demand = {"bookticker:ETHBTC": NOW}
    assert plan([], False, demand, frozenset({"BTCUSDT"}), NOW, IDLE).routes == {}


def test_statuses_come_from_the_recorded_exchange_info() -> None:
    import orjson

    from simulator.config import EXCHANGE_INFO_FIXTURE

    statuses = statuses_of(orjson.loads(EXCHANGE_INFO_FIXTURE.read_bytes()))
    assert len(statuses) == 1695
    assert sum(s == "TRADING" for s in statuses.values()) == 1262
    assert statuses["ETHBTC"] == "TRADING"
    assert statuses_of({"symbols": [{"symbol": 1}, "x", {"status": "TRADING"}]}) == {}


def test_pinned_kinds_apply_to_every_pinned_symbol_and_demand_may_ask_for_any_kind() -> None:
    from messenger.binance import KINDS

    demand = {"kline_1M:ETHBTC": NOW, "depth5:BNBBTC": NOW}
    wanted = plan(["BTCUSDT"], False, demand, TRADING, NOW, IDLE, [KINDS["bookTicker"], KINDS["trade"]])
    assert set(wanted.routes) == {
        "btcusdt@bookTicker", "btcusdt@trade", "ethbtc@kline_1M", "bnbbtc@depth5@100ms"}  # fmt: skip
    assert wanted.routes["btcusdt@trade"].history_key == tail_key("trade", "btcusdt")
    assert wanted.routes["ethbtc@kline_1M"].key == snapshot_key("kline_1M", "ETHBTC")


def test_demand_over_the_cap_keeps_the_most_recently_asked_for() -> None:
    demand = {"bookticker:ETHBTC": NOW - 3, "trade:ETHBTC": NOW - 1, "bookticker:BNBBTC": NOW - 2}
    wanted = plan([], False, demand, TRADING, NOW, IDLE, max_demand=2)
    assert set(wanted.routes) == {"ethbtc@trade", "bnbbtc@bookTicker"}
    assert wanted.over_cap == 1
    assert plan([], False, demand, TRADING, NOW, IDLE, max_demand=3).over_cap == 0


def test_pinned_streams_do_not_count_against_the_cap_on_demand() -> None:
    demand = {"bookticker:BTCUSDT": NOW, "bookticker:ETHBTC": NOW - 1, "bookticker:BNBBTC": NOW - 2}
    wanted = plan(["BTCUSDT"], False, demand, TRADING, NOW, IDLE, max_demand=1)
    assert set(wanted.routes) == streams("BTCUSDT", "ETHBTC")
    assert wanted.pinned == streams("BTCUSDT")
    assert plan(["BTCUSDT"], False, demand, TRADING, NOW, IDLE, max_demand=0).routes.keys() == streams(
        "BTCUSDT"
    )


def test_idle_demand_does_not_count_against_the_cap() -> None:
    demand = {"bookticker:ETHBTC": NOW - IDLE - 1, "bookticker:BNBBTC": NOW - IDLE + 1}
    wanted = plan([], False, demand, TRADING, NOW, IDLE, max_demand=1)
    assert (set(wanted.routes), wanted.over_cap) == (streams("BNBBTC"), 0)
