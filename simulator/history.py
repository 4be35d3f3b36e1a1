"""A symbol's past: 35 days of trades before its market opened, made up on demand, the same every run.

The schedule is a pure function of the run's seed, the symbol and the hour (a counter-based hash,
SplitMix64), so any hour can be made on its own without the ones before it:

- every UTC hour has 45 to 134 aggregate trades (taker orders) at hashed instants, each filling
  one or more trades at one price (135 to 200 trades an hour: a few a minute, so many a 1 m
  window and most 1 s windows have none);
- prices follow a continuous path, layered value noise on the log of the price (periods of 7 d
  down to 15 min, about +-10 % overall), scaled so that it passes exactly through the live book's
  mid price at the instant the market was created (``t0``); each taker order strays from it by a
  hashed jitter (up to +-0.15 %), and a taker buy pays half a spread above, a sell half below;
- trade ids and aggregate ids are consecutive, and end where the live market's begin: the last
  trade before ``t0`` has id ``next_trade_id - 1``.

Nothing is made when a market is created: the first question about the past costs a hash per
hour (to count trades and place ids), and each hour's trades are made when a query reaches them,
kept in a small cache, their totals (per hour and per UTC day) kept for good.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass

from simulator.stats import Stats, combine, of_trades

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HISTORY_DAYS = 35
HOURS_KEPT = 256  # hours of trades kept made, across all symbols (about 30 KB each)

_M64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
# (period, amplitude of the log price) of each layer of the path; finer moves are a per-order jitter.
_OCTAVES = ((7 * DAY_MS, 0.06), (DAY_MS, 0.025), (4 * HOUR_MS, 0.012), (HOUR_MS, 0.006), (900_000, 0.003))
_JITTER = 0.0015


_made: OrderedDict[tuple[int, int], Hour] = OrderedDict()  # (history serial, hour) -> its trades
_serials = itertools.count()


def _mix(x: int) -> int:
    """SplitMix64's finaliser: 64 well-mixed bits from any integer."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _at(salt: int, n: int) -> int:
    """The ``n``-th number of the stream ``salt``."""
    return _mix(salt + n * _GAMMA)


def symbol_key(seed: int, symbol: str) -> int:
    """A 64-bit key of (seed, symbol), the same in every process (``hash()`` is not)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=8).digest(), "big")


class PricePath:
    """The price at any instant, as layered value noise through ``(anchor_ms, anchor_price)``."""

    def __init__(self, key: int, anchor_ms: int, anchor_price: int) -> None:
        self._layers = [(_at(key, 1000 + k), period, amp) for k, (period, amp) in enumerate(_OCTAVES)]
        self._anchor_price = anchor_price
        self._shift = self._noise([anchor_ms])[0]  # the path passes through anchor_price at anchor_ms

    def _noise(self, times: list[int]) -> list[float]:
        out = [0.0] * len(times)
        for salt, period, amp in self._layers:
            last = -1
            v0 = dv = 0.0
            inv = 1.0 / period
            for n, t in enumerate(times):
                i = t // period
                if i != last:
                    v0 = amp * (_at(salt, i) / 2**63 - 1.0)
                    dv = amp * (_at(salt, i + 1) / 2**63 - 1.0) - v0
                    last = i
                f = (t - i * period) * inv
                out[n] += v0 + dv * f * f * (3.0 - 2.0 * f)
        return out

    def prices(self, times: list[int], jitters: list[int]) -> list[int]:
        """Mid prices (integers of 1e-8) at sorted instants, each moved by a hashed jitter."""
        shift, anchor, exp = self._shift, self._anchor_price, math.exp
        scale = _JITTER / 2**63
        return [
            max(2, round(anchor * exp(v - shift + (j * scale - _JITTER))))
            for v, j in zip(self._noise(times), jitters, strict=True)
        ]


@dataclass(slots=True)
class Hour:
    """The trades of one hour (only those before ``t0`` for the last), in time order."""

    start: int
    first_id: int  # the id of its first trade
    first_agg: int  # the id of its first aggregate trade
    times: list[int]  # per trade
    prices: list[int]
    qtys: list[int]
    makers: list[bool]
    agg_of: list[int]  # per trade: its aggregate's index in the hour
    agg_start: list[int]  # per aggregate: the index of its first trade (and one past the last one)
    agg_times: list[int]  # per aggregate

    def stats(self, lo: int, hi: int) -> Stats | None:
        """Trades ``lo`` to ``hi - 1`` of the hour, added up."""
        return of_trades(self.first_id + lo, self.prices, self.qtys, self.makers, lo, hi)


class History:
    """All trades of one symbol from ``HISTORY_DAYS`` days (on an hour) before ``t0`` up to ``t0``."""

    def __init__(self, key: int, t0: int, next_trade_id: int, next_agg_id: int, mid: int) -> None:
        self._key = key
        self.t0 = t0
        self._path = PricePath(key, t0, mid)
        self._counts_salt, self._hour_salt = _at(key, 1), _at(key, 2)
        self.first_hour = (t0 - HISTORY_DAYS * DAY_MS) // HOUR_MS
        self.last_hour = (t0 - 1) // HOUR_MS
        self._serial = next(_serials)
        self._hour_stats: dict[int, Stats | None] = {}
        self._day_stats: dict[int, Stats | None] = {}
        trades, aggs = [0], [0]
        for h in range(self.first_hour, self.last_hour):
            n_aggs, n_extra = self._counts(h)
            trades.append(trades[-1] + n_aggs + n_extra)
            aggs.append(aggs[-1] + n_aggs)
        last = self._make(self.last_hour, 0, 0)  # cut at t0, so it must be made to be counted
        trades.append(trades[-1] + len(last.times))
        aggs.append(aggs[-1] + len(last.agg_times))
        self._cum_trades, self._cum_aggs = trades, aggs
        self.first_id = next_trade_id - trades[-1]
        self.first_agg = next_agg_id - aggs[-1]
        self.end_id = next_trade_id  # one past the last trade of the past
        self.end_agg = next_agg_id
        self.start = self.first_hour * HOUR_MS  # no trade before (the first is a little after)

    def _counts(self, h: int) -> tuple[int, int]:
        r = _at(self._counts_salt, h)
        n_aggs = 45 + r % 90
        return n_aggs, (r >> 20) % (n_aggs // 2 + 1)

    def _make(self, h: int, first_id: int, first_agg: int) -> Hour:
        n_aggs, n_extra = self._counts(h)
        start, salt = h * HOUR_MS, _at(self._hour_salt, h)
        drawn = sorted((_at(salt, i) for i in range(n_aggs)), key=lambda r: r % HOUR_MS)  # by time
        fills = [1] * n_aggs
        for j in range(n_extra):
            fills[_at(salt ^ 1, j) % n_aggs] += 1
        agg_times = [start + r % HOUR_MS for r in drawn]
        if h == self.last_hour:
            keep = bisect.bisect_left(agg_times, self.t0)
            agg_times, drawn, fills = agg_times[:keep], drawn[:keep], fills[:keep]
        mids = self._path.prices(agg_times, [_mix(r) for r in drawn])
        times: list[int] = []
        prices: list[int] = []
        makers: list[bool] = []
        agg_of: list[int] = []
        agg_start: list[int] = []
        for i, (t, r, mid, k) in enumerate(zip(agg_times, drawn, mids, fills, strict=True)):
            maker = bool((r >> 40) & 1)  # the buyer was the maker: a taker sold, below the mid
            half = max(1, mid // 10_000)
            price = mid - half if maker else mid + half
            agg_start.append(len(times))
            times.extend([t] * k)
            prices.extend([price] * k)
            makers.extend([maker] * k)
            agg_of.extend([i] * k)
        agg_start.append(len(times))
        qty_salt = salt ^ 2
        qtys = [(1 + _at(qty_salt, n) % 100_000) * 100_000 for n in range(len(times))]  # 0.001 to 100
        return Hour(start, first_id, first_agg, times, prices, qtys, makers, agg_of, agg_start, agg_times)

    def hour(self, h: int) -> Hour:
        """The trades of hour ``h`` (epoch ms // 3,600,000), within the history's hours."""
        made = _made.get((self._serial, h))
        if made is None:
            k = h - self.first_hour
            made = self._make(h, self.first_id + self._cum_trades[k], self.first_agg + self._cum_aggs[k])
            _made[self._serial, h] = made
            if len(_made) > HOURS_KEPT:
                _made.popitem(last=False)
        else:
            _made.move_to_end((self._serial, h))
        return made

    # -- totals over time -------------------------------------------------------------

    def stats(self, a: int, b: int) -> Stats | None:
        """The trades at ``a <= time < b`` added up."""
        a, b = max(a, self.start), min(b, self.t0)
        parts: list[Stats | None] = []
        while a < b:
            h = a // HOUR_MS
            end = (h + 1) * HOUR_MS
            if a % DAY_MS == 0 and a + DAY_MS <= b:
                parts.append(self._day(a // DAY_MS))
                a += DAY_MS
            elif a % HOUR_MS == 0 and end <= b:
                parts.append(self._hour_total(h))
                a = end
            else:
                hour, stop = self.hour(h), min(b, end)
                lo, hi = bisect.bisect_left(hour.times, a), bisect.bisect_left(hour.times, stop)
                parts.append(hour.stats(lo, hi))
                a = stop
        return combine(parts)

    def _hour_total(self, h: int) -> Stats | None:
        if h not in self._hour_stats:
            if self.first_hour <= h <= self.last_hour:
                hour = self.hour(h)
                self._hour_stats[h] = hour.stats(0, len(hour.times))
            else:
                self._hour_stats[h] = None
        return self._hour_stats[h]

    def _day(self, d: int) -> Stats | None:
        if d not in self._day_stats:
            first = d * DAY_MS // HOUR_MS
            self._day_stats[d] = combine(self._hour_total(h) for h in range(first, first + 24))
        return self._day_stats[d]

    # -- trades by id and by time -----------------------------------------------------

    def first_time(self) -> int:
        """When the first trade happened."""
        return self.hour(self.first_hour).times[0]

    def _hour_index(self, cum: list[int], n: int) -> int:
        return self.first_hour + bisect.bisect_right(cum, n) - 1

    def hour_of_trade(self, trade_id: int) -> Hour:
        """The hour holding a trade (``first_id <= trade_id < end_id``)."""
        return self.hour(self._hour_index(self._cum_trades, trade_id - self.first_id))

    def hour_of_agg(self, agg_id: int) -> Hour:
        """The hour holding an aggregate trade (``first_agg <= agg_id < end_agg``)."""
        return self.hour(self._hour_index(self._cum_aggs, agg_id - self.first_agg))

    def first_trade_at(self, t: int) -> int:
        """The id of the first trade at or after ``t`` (``end_id`` if none)."""
        if t <= self.start:
            return self.first_id
        if t >= self.t0:
            return self.end_id
        hour = self.hour(t // HOUR_MS)
        return hour.first_id + bisect.bisect_left(hour.times, t)

    def first_agg_at(self, t: int) -> int:
        """The id of the first aggregate trade at or after ``t`` (``end_agg`` if none)."""
        if t <= self.start:
            return self.first_agg
        if t >= self.t0:
            return self.end_agg
        hour = self.hour(t // HOUR_MS)
        return hour.first_agg + bisect.bisect_left(hour.agg_times, t)
