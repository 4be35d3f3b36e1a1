"""One symbol's whole record of trades: the made-up past (simulator/history.py), then the live ones.

Live trades (``Market.step``) are kept compactly (about 25 bytes each) with a running total per
minute, so a candle or a rolling window over live time adds up minutes, not trades. Each live
trade is its own aggregate trade; ids of both kinds run on from the past's without a gap.
"""

from __future__ import annotations

import bisect
from array import array

from simulator.history import HOUR_MS, History
from simulator.stats import Stats, combine, of_trades

MINUTE_MS = 60_000

TradeRow = tuple[int, int, int, int, bool]  # id, time, price, qty, buyer_is_maker
AggRow = tuple[int, int, int, int, int, int, bool]  # agg id, time, price, qty, first id, last id, maker


class Tape:
    """Every trade of a symbol, from its history's first to the last live one."""

    def __init__(self, key: int, t0: int, next_trade_id: int, next_agg_id: int, mid: int) -> None:
        self.t0 = t0
        self._history_args = (key, t0, next_trade_id, next_agg_id, mid)
        self._history: History | None = None
        self.live_first_id = next_trade_id
        self.live_first_agg = next_agg_id
        self._times = array("q")
        self._prices = array("q")
        self._qtys = array("q")
        self._makers = bytearray()
        self._minutes: list[int] = []  # minutes (epoch ms // 60,000) with a live trade, in order
        self._minute_stats: dict[int, Stats] = {}

    @property
    def history(self) -> History:
        """The past, made on first use."""
        if self._history is None:
            self._history = History(*self._history_args)
        return self._history

    @property
    def history_made(self) -> bool:
        """Whether anything asked about the past yet (creating markets must not)."""
        return self._history is not None

    def record(self, at_ms: int, price: int, qty: int, buyer_is_maker: bool) -> tuple[int, int, int]:
        """A live trade: its (trade id, aggregate id, time); time never goes back, nor before t0."""
        times = self._times
        if times and at_ms < times[-1]:
            at_ms = times[-1]
        elif at_ms < self.t0:
            at_ms = self.t0
        n = len(times)
        trade_id = self.live_first_id + n
        times.append(at_ms)
        self._prices.append(price)
        self._qtys.append(qty)
        self._makers.append(buyer_is_maker)
        minute = at_ms // MINUTE_MS
        stats = self._minute_stats.get(minute)
        if stats is None:
            self._minute_stats[minute] = Stats.of_trade(trade_id, price, qty, buyer_is_maker)
            self._minutes.append(minute)
        else:
            stats.add_trade(trade_id, price, qty, buyer_is_maker)
        return trade_id, self.live_first_agg + n, at_ms

    @property
    def last_id(self) -> int:
        """The id of the latest trade."""
        return self.live_first_id + len(self._times) - 1

    @property
    def last_agg(self) -> int:
        """The id of the latest aggregate trade."""
        return self.live_first_agg + len(self._times) - 1

    def last_trade(self) -> TradeRow:
        """The latest trade."""
        return self.trades(self.last_id, self.last_id + 1)[0]

    # -- trades by id ---------------------------------------------------------------

    def trades(self, lo: int, hi: int) -> list[TradeRow]:
        """Trades with ``lo <= id < hi``, oldest first (ids outside the record are left out)."""
        hi = min(hi, self.last_id + 1)
        out: list[TradeRow] = []
        if lo < self.live_first_id:
            history = self.history
            lo = max(lo, history.first_id)
            while lo < min(hi, self.live_first_id):
                hour = history.hour_of_trade(lo)
                base = hour.first_id
                stop = min(len(hour.times), hi - base)
                times, prices, qtys, makers = hour.times, hour.prices, hour.qtys, hour.makers
                for k in range(lo - base, stop):
                    out.append((base + k, times[k], prices[k], qtys[k], makers[k]))
                lo = base + stop
        base = self.live_first_id
        for k in range(max(lo, base) - base, hi - base):
            out.append((base + k, self._times[k], self._prices[k], self._qtys[k], bool(self._makers[k])))
        return out

    def aggs(self, lo: int, hi: int) -> list[AggRow]:
        """Aggregate trades with ``lo <= id < hi``, oldest first."""
        hi = min(hi, self.last_agg + 1)
        out: list[AggRow] = []
        if lo < self.live_first_agg:
            history = self.history
            lo = max(lo, history.first_agg)
            while lo < min(hi, self.live_first_agg):
                hour = history.hour_of_agg(lo)
                starts, qtys = hour.agg_start, hour.qtys
                stop = min(len(hour.agg_times), hi - hour.first_agg)
                for i in range(lo - hour.first_agg, stop):
                    f, end = starts[i], starts[i + 1]
                    out.append((hour.first_agg + i, hour.agg_times[i], hour.prices[f], sum(qtys[f:end]),
                                hour.first_id + f, hour.first_id + end - 1, hour.makers[f]))  # fmt: skip
                lo = hour.first_agg + stop
        base, trade_base = self.live_first_agg, self.live_first_id
        for k in range(max(lo, base) - base, hi - base):
            out.append((base + k, self._times[k], self._prices[k], self._qtys[k], trade_base + k,
                        trade_base + k, bool(self._makers[k])))  # fmt: skip
        return out

    # -- by time ----------------------------------------------------------------------

    def first_trade_at(self, t: int) -> int:
        """The id of the first trade at or after ``t`` (one past the last if none)."""
        if t <= self.t0:
            found = self.history.first_trade_at(t)
            if found < self.live_first_id:
                return found
        return self.live_first_id + bisect.bisect_left(self._times, t)

    def first_agg_at(self, t: int) -> int:
        """The id of the first aggregate trade at or after ``t`` (one past the last if none)."""
        if t <= self.t0:
            found = self.history.first_agg_at(t)
            if found < self.live_first_agg:
                return found
        return self.live_first_agg + bisect.bisect_left(self._times, t)

    def first_time(self) -> int:
        """When the first trade happened."""
        return self.history.first_time()

    def price_before(self, t: int) -> int | None:
        """The price of the last trade before ``t``; None before the first."""
        k = bisect.bisect_left(self._times, t) - 1
        if k >= 0:
            return self._prices[k]
        history = self.history
        t = min(t, self.t0)
        h = (t - 1) // HOUR_MS
        while h >= history.first_hour:
            hour = history.hour(h)
            k = bisect.bisect_left(hour.times, t) - 1
            if k >= 0:
                return hour.prices[k]
            h -= 1
        return None

    def stats(self, a: int, b: int) -> Stats | None:
        """The trades at ``a <= time < b`` added up."""
        past = self.history.stats(a, min(b, self.t0)) if a < self.t0 else None
        live = self._live_stats(max(a, self.t0), b) if b > self.t0 else None
        return combine((past, live))

    def _live_stats(self, a: int, b: int) -> Stats | None:
        """Live trades in [a, b): whole minutes from their running totals, the partial minutes at
        either end trade by trade (or from the running total too, when they hold all of it)."""
        times = self._times
        lo, hi = bisect.bisect_left(times, a), bisect.bisect_left(times, b)
        if lo >= hi:
            return None
        first_minute, last_minute = -(-a // MINUTE_MS), b // MINUTE_MS  # whole minutes: [first, last)
        if first_minute >= last_minute:
            return self._span(lo, hi)
        cut_a = bisect.bisect_left(times, first_minute * MINUTE_MS)  # head: [lo, cut_a)
        cut_b = bisect.bisect_left(times, last_minute * MINUTE_MS)  # tail: [cut_b, hi)
        head = tail = None
        if lo < cut_a:
            whole = lo == 0 or times[lo - 1] < (first_minute - 1) * MINUTE_MS
            head = self._minute_stats[first_minute - 1] if whole else self._span(lo, cut_a)
        if cut_b < hi:
            tail = self._minute_stats[last_minute] if hi == len(times) else self._span(cut_b, hi)
        minutes = self._minutes
        i, j = bisect.bisect_left(minutes, first_minute), bisect.bisect_left(minutes, last_minute)
        middle = combine(self._minute_stats[m] for m in minutes[i:j])
        return combine((head, middle, tail))

    def _span(self, lo: int, hi: int) -> Stats | None:
        return of_trades(self.live_first_id + lo, self._prices, self._qtys, self._makers, lo, hi)
