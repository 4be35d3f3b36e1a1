"""The simulator's history: one consistent record of trades, candles of every interval made from it.

Unit tests on the model itself (no process): a tape with a fixed creation instant ``T0``, live
trades recorded at chosen instants, and what every view of it says.
"""

from __future__ import annotations

import datetime
import random
import time
from decimal import Decimal
from typing import Any

import pytest

from simulator import klines, rolling
from simulator.history import DAY_MS, HISTORY_DAYS, HOUR_MS, PricePath, symbol_key
from simulator.market import Market
from simulator.stats import fmt
from simulator.tape import Tape
from simulator.windows import INTERVALS, next_open, open_of, parse_time_zone

T0 = 1_700_000_123_456  # 2023-11-14 22:15:23.456 UTC, a Tuesday
MID = 37_000 * 10**8 + 12_345_678
NEXT_TRADE, NEXT_AGG = 5_000_000, 1_000_000


def make_tape(seed: int = 1, symbol: str = "BTCUSDT") -> Tape:
    return Tape(symbol_key(seed, symbol), T0, NEXT_TRADE, NEXT_AGG, MID)


def with_live_trades(tape: Tape, n: int = 400, rng_seed: int = 7) -> Tape:
    """Live trades at irregular instants over the 40 minutes after T0, some in bursts, some gaps."""
    rng = random.Random(rng_seed)
    at, price = T0 + 1, MID
    for _ in range(n):
        at += rng.choice((0, 1, 5, 300, 2_000, 9_000, 61_000)) // 8
        price += rng.randint(-5, 5) * 10**6
        tape.record(at, price, rng.randrange(1, 10**5) * 10**5, rng.random() < 0.5)
    return tape


def totals(rows: list[list[Any]]) -> tuple[Any, ...]:
    """What consecutive klines rows add up to (prices from those with trades)."""
    traded = [r for r in rows if r[8] > 0]
    if not traded:
        return ("no trades", rows[0][4])
    return (
        traded[0][1],
        max(Decimal(r[2]) for r in traded),
        min(Decimal(r[3]) for r in traded),
        traded[-1][4],
        *(sum(Decimal(r[k]) for r in rows) for k in (5, 7, 9, 10)),
        sum(r[8] for r in rows),
    )


def as_totals(row: list[Any]) -> tuple[Any, ...]:
    if row[8] == 0:
        return ("no trades", row[4])
    return (
        row[1],
        Decimal(row[2]),
        Decimal(row[3]),
        row[4],
        *(Decimal(row[k]) for k in (5, 7, 9, 10)),
        row[8],
    )


def test_creating_2500_markets_makes_no_history() -> None:
    market = Market(seed=3)
    started = time.monotonic()
    for n in range(2500):
        market.market(f"SIM{n:04d}USDT")
    elapsed = time.monotonic() - started
    assert not any(m.tape.history_made for m in market.markets().values())
    assert elapsed < 5.0  # about 25 ms here; history for each would take minutes


def test_history_is_the_same_every_run_and_differs_by_seed_and_symbol() -> None:
    window = (T0 - 3 * DAY_MS, T0 - 3 * DAY_MS + HOUR_MS)
    first = make_tape()
    ids = (first.first_trade_at(window[0]), first.first_trade_at(window[1]))
    again = make_tape()
    assert again.trades(*ids) == first.trades(*ids) and len(first.trades(*ids)) >= 45
    assert make_tape(seed=2).trades(*ids) != first.trades(*ids)
    assert make_tape(symbol="ETHBTC").trades(*ids) != first.trades(*ids)


def test_history_reaches_35_days_back_and_its_path_ends_at_the_book() -> None:
    tape = make_tape()
    history = tape.history
    assert history.first_time() <= T0 - HISTORY_DAYS * DAY_MS + HOUR_MS
    path = PricePath(symbol_key(1, "BTCUSDT"), T0, MID)
    assert path.prices([T0], [2**63]) == [MID]  # no jitter: exactly the book's mid price
    last = tape.last_trade()
    assert last[0] == NEXT_TRADE - 1 and last[1] < T0
    assert abs(last[2] - MID) / MID < 0.005
    prices = [t[2] for t in tape.trades(history.first_id, NEXT_TRADE)]
    assert min(prices) / MID > 0.75 and max(prices) / MID < 1.3  # it wanders, within reason


def test_trade_and_aggregate_ids_run_on_without_a_gap_into_the_live_ones() -> None:
    tape = with_live_trades(make_tape(), n=20)
    history = tape.history
    assert tape.live_first_id == NEXT_TRADE == history.end_id
    lo = tape.first_trade_at(T0 - 2 * HOUR_MS)
    trades = tape.trades(lo, tape.last_id + 1)
    assert [t[0] for t in trades] == list(range(lo, tape.last_id + 1))
    assert [t[1] for t in trades] == sorted(t[1] for t in trades)
    assert sum(t[1] >= T0 for t in trades) == 20
    by_id = {t[0]: t for t in trades}
    aggs = tape.aggs(tape.first_agg_at(T0 - 2 * HOUR_MS), tape.last_agg + 1)
    assert [a[0] for a in aggs] == list(range(aggs[0][0], tape.last_agg + 1))
    assert aggs[0][4] == lo  # the first aggregate at that instant starts with the first trade
    covered: list[int] = []
    for a, at, price, qty, first, last, maker in aggs:
        fills = [by_id[i] for i in range(first, last + 1)]
        assert a not in range(first, last + 1)  # aggregate ids are their own numbering
        assert {(t[1], t[2], t[4]) for t in fills} == {(at, price, maker)}  # one taker order, one price
        assert sum(t[3] for t in fills) == qty
        covered.extend(range(first, last + 1))
    assert covered == [t[0] for t in trades]  # every trade in exactly one aggregate, in order
    assert any(a[5] > a[4] for a in aggs)  # some fill several trades, as Binance aggregates them
    assert tape.aggs(tape.last_agg, tape.last_agg + 1)[0][4] == tape.last_id


def test_ranges_of_trades_by_time_and_id_at_the_history_edges() -> None:
    tape = make_tape()
    first = tape.history.first_id
    assert tape.trades(first - 10, first + 2) == tape.trades(first, first + 2)
    assert tape.first_trade_at(0) == first
    assert tape.first_trade_at(T0) == tape.first_trade_at(T0 + DAY_MS) == NEXT_TRADE  # nothing live yet
    assert tape.trades(NEXT_TRADE, NEXT_TRADE + 5) == []
    assert tape.price_before(tape.history.first_time()) is None


def test_a_candle_is_its_smaller_candles_added_up() -> None:
    tape = with_live_trades(make_tape())
    now = T0 + 45 * 60_000
    cases = [("1m", "1h", 0), ("1h", "1d", 0), ("1d", "1w", 0), ("1d", "3d", 0), ("1d", "1M", 0),
             ("15m", "4h", parse_time_zone("05:45")), ("1h", "1d", parse_time_zone("-3")),
             ("1s", "1m", 0), ("5m", "30m", 0)]  # fmt: skip
    for small, big, offset in cases:
        assert offset is not None
        bigs = klines.opens(tape, big, offset, None, None, 4, now)
        assert len(bigs) >= 2  # the 1M ones: the month of the first trade and the next
        for start in bigs:
            end = next_open(start, big, offset)
            big_row = klines.rows(tape, big, offset, [start])[0]
            starts = klines.opens(tape, small, offset, start, end - 1, 1000, now)
            assert starts[0] == max(start, open_of(tape.first_time(), small, offset))
            assert totals(klines.rows(tape, small, offset, starts)) == as_totals(big_row), (small, big, start)


def test_windows_are_cut_as_binance_cuts_them() -> None:
    t = 1_700_000_123_456  # Tuesday 2023-11-14 22:15:23.456 UTC
    assert open_of(t, "1s") == 1_700_000_123_000 and open_of(t, "1m") == 1_700_000_100_000
    assert datetime.datetime.fromtimestamp(open_of(t, "1w") / 1000, datetime.UTC) == datetime.datetime(
        2023, 11, 13, tzinfo=datetime.UTC
    )  # the Monday before
    assert open_of(t, "1M") == 1_698_796_800_000  # 2023-11-01
    assert next_open(open_of(t, "1M"), "1M") == 1_701_388_800_000  # December: 30 days later
    assert next_open(1_706_745_600_000, "1M") - 1_706_745_600_000 == 29 * DAY_MS  # February 2024
    assert open_of(t, "3d") % (3 * DAY_MS) == 0 and open_of(t, "3d") <= t < open_of(t, "3d") + 3 * DAY_MS
    eight = parse_time_zone("8")
    assert eight == 8 * HOUR_MS
    assert open_of(t, "1d", eight) == 1_699_977_600_000  # 2023-11-15 in UTC+8: 16:00 UTC the day before
    assert open_of(t, "1M", eight) == 1_698_796_800_000 - eight  # November 1st, 00:00 in UTC+8
    quarter = parse_time_zone("05:45")
    assert quarter is not None and open_of(t, "1h", quarter) % HOUR_MS == 15 * 60_000
    assert [parse_time_zone(z) for z in ("-12:00", "+14:00", "0", "-1:30")] == [
        -12 * HOUR_MS, 14 * HOUR_MS, 0, -90 * 60_000]  # fmt: skip
    assert [parse_time_zone(z) for z in ("-12:01", "14:30", "15", "8:60", "x", "", "1:5")] == [None] * 7
    for interval in INTERVALS:  # windows tile time: each opens where the one before closed
        w = open_of(t, interval)
        assert w <= t < next_open(w, interval) and open_of(w - 1, interval) < w


def test_a_window_without_trades_is_a_flat_candle_at_the_previous_close() -> None:
    tape = make_tape()
    tape.record(T0 + 1_500, MID + 10**8, 10**8, False)
    tape.record(T0 + 9_200, MID - 10**8, 10**8, True)
    rows = klines.rows(tape, "1s", 0, [T0 - T0 % 1000 + k * 1000 for k in range(1, 10)])
    assert [r[8] for r in rows] == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    price = fmt(MID + 10**8)
    assert rows[3] == [rows[3][0], price, price, price, price, "0.00000000", rows[3][0] + 999, "0.00000000",
                       0, "0.00000000", "0.00000000", "0"]  # fmt: skip
    frame = klines.candle(tape, "1s", 0, rows[3][0]).frame("BTCUSDT", "1s", True, T0 + 10_000)
    assert b'"f":-1,"L":-1' in frame and b'"n":0,"x":true' in frame
    alone = klines.rows(tape, "1s", 0, [rows[3][0]])[0]  # asked for by itself: the same
    assert alone == rows[3]


def test_no_window_opens_before_the_first_trade() -> None:
    tape = make_tape()
    first_time = tape.first_time()
    for interval in ("1m", "1d", "1M"):
        starts = klines.opens(tape, interval, 0, 0, None, 3, T0)
        assert starts[0] == open_of(first_time, interval)
        first = klines.candle(tape, interval, 0, starts[0])
        assert first.stats is not None and first.stats.first_id == tape.history.first_id
        assert klines.opens(tape, interval, 0, None, first_time - DAY_MS * 40, 10, T0) == []


def test_range_selection_follows_binance() -> None:
    tape = make_tape()
    now = T0 + 90_500
    latest = klines.opens(tape, "1m", 0, None, None, 5, now)
    assert latest[-1] == open_of(now, "1m") and len(latest) == 5  # ending with the open candle
    assert latest == [latest[0] + k * 60_000 for k in range(5)]
    start = T0 - 10 * 60_000 + 1  # not on a minute: the first window opening at or after it
    assert klines.opens(tape, "1m", 0, start, None, 3, now) == [
        open_of(start, "1m") + k * 60_000 for k in (1, 2, 3)
    ]
    end = T0 - 5 * 60_000 - 1
    assert klines.opens(tape, "1m", 0, None, end, 2, now) == [open_of(end, "1m") - 60_000, open_of(end, "1m")]
    both = klines.opens(tape, "1m", 0, start, end, 1000, now)
    assert both[0] > start - 60_000 and both[-1] <= end and len(both) == 5
    assert klines.opens(tape, "1m", 0, start, end, 2, now) == both[:2]
    assert klines.opens(tape, "1m", 0, now + 60_000, None, 5, now) == []  # the future: nothing
    assert klines.opens(tape, "1m", 0, end, start, 5, now) == []  # start after end


def test_live_totals_are_every_trade_in_the_range() -> None:
    tape = with_live_trades(make_tape(), n=600, rng_seed=11)
    rng = random.Random(5)
    last = tape.trades(tape.last_id, tape.last_id + 1)[0][1]
    edges = [
        T0 - 90_000,
        T0,
        T0 + 1,
        last,
        last + 1,
        *(rng.randrange(T0 - 120_000, last + 5_000) for _ in range(60)),
    ]
    for a in edges:
        for b in rng.sample(edges, 8):
            if a >= b:
                continue
            trades = tape.trades(tape.first_trade_at(a), tape.first_trade_at(b))
            stats = tape.stats(a, b)
            if not trades:
                assert stats is None
                continue
            assert stats is not None
            assert (stats.first_id, stats.last_id, stats.count) == (trades[0][0], trades[-1][0], len(trades))
            assert (stats.open, stats.close) == (trades[0][2], trades[-1][2])
            assert (stats.high, stats.low) == (max(t[2] for t in trades), min(t[2] for t in trades))
            assert stats.volume == sum(t[3] for t in trades)
            assert stats.taker_volume == sum(t[3] for t in trades if not t[4])


@pytest.mark.parametrize("window_name", ["1m", "5m", "1h", "4h", "1d", "7d"])
def test_a_rolling_window_is_every_trade_since_its_minute(window_name: str) -> None:
    tape = with_live_trades(make_tape(), n=300)
    now = tape.trades(NEXT_TRADE + 150, NEXT_TRADE + 151)[0][1] + 5_000  # later live trades are left out
    window = rolling.window_ms(window_name)
    assert window is not None
    values = rolling.letters(tape, window, now)
    open_ms = (now - window) // 60_000 * 60_000
    assert (values["O"], values["C"]) == (open_ms, now) and now - window - open_ms < 60_000
    trades = tape.trades(tape.first_trade_at(open_ms), tape.first_trade_at(now + 1))
    assert (values["F"], values["L"], values["n"]) == (trades[0][0], trades[-1][0], len(trades))
    assert values["o"] == fmt(trades[0][2]) and values["c"] == fmt(trades[-1][2])
    assert values["h"] == fmt(max(t[2] for t in trades)) and values["v"] == fmt(sum(t[3] for t in trades))
    change = trades[-1][2] - trades[0][2]
    assert values["p"] == fmt(change) and values["P"] == f"{100 * change / trades[0][2]:.3f}"


def test_window_sizes_binance_accepts() -> None:
    accepted = (
        [f"{n}m" for n in range(1, 60)] + [f"{n}h" for n in range(1, 24)] + [f"{n}d" for n in range(1, 8)]
    )
    assert all(rolling.window_ms(w) for w in accepted)
    assert [rolling.window_ms(w) for w in ("60m", "24h", "8d", "0m", "1w", "1d2h", "01h", "")] == [None] * 8
