"""Candles of every interval, made from a symbol's trades: REST rows and kline stream frames.

A window without a trade, after the symbol's first trade, is a candle all the same, as Binance
sends them for quiet symbols: open = high = low = close = the previous close, zero volumes,
0 trades, and in the stream first and last trade id -1 (what Binance sends for a candle without
trades: sonvister/Binance issue 7). Windows before the first trade do not exist.
Every answer, the stream's closing frame (``"x": true``) and a later REST row of the same window
alike, is the same sum of the same trades, so they agree exactly.

``uiKlines`` answers the same rows as ``klines``: Binance documents the same parameters and
response and says only that the data is "optimized for presentation", without saying how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from simulator.stats import Stats, fmt
from simulator.tape import Tape
from simulator.windows import next_open, open_of, previous_open

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Candle:
    """One window of an interval and what traded in it."""

    start: int
    end: int  # the next window's open time (the close time is end - 1)
    stats: Stats | None  # None: no trade
    price: int  # the close (the previous close if nothing traded)

    def row(self) -> list[Any]:
        """Binance's 12-field ``GET /api/v3/klines`` row."""
        s, p = self.stats, fmt(self.price)
        if s is None:
            return [self.start, p, p, p, p, "0.00000000", self.end - 1, "0.00000000", 0, "0.00000000",
                    "0.00000000", "0"]  # fmt: skip
        return [self.start, fmt(s.open), fmt(s.high), fmt(s.low), fmt(s.close), fmt(s.volume), self.end - 1,
                fmt(s.quote), s.count, fmt(s.taker_volume), fmt(s.taker_quote), "0"]  # fmt: skip

    def frame(self, symbol: str, interval: str, closed: bool, event_ms: int) -> bytes:
        """The ``<symbol>@kline_<interval>`` event."""
        row, s = self.row(), self.stats
        first, last = (-1, -1) if s is None else (s.first_id, s.last_id)
        return orjson.dumps({"e": "kline", "E": event_ms, "s": symbol, "k": {
            "t": self.start, "T": self.end - 1, "s": symbol, "i": interval, "f": first, "L": last,
            "o": row[1], "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8], "x": closed,
            "q": row[7], "V": row[9], "Q": row[10], "B": "0"}})  # fmt: skip


def candle(
    tape: Tape, interval: str, offset_ms: int, start: int, previous_close: int | None = None
) -> Candle:
    """The candle of the window opening at ``start`` (trades so far, if it is still open)."""
    end = next_open(start, interval, offset_ms)
    stats = tape.stats(start, end)
    if stats is not None:
        return Candle(start, end, stats, stats.close)
    price = previous_close if previous_close is not None else tape.price_before(start)
    return Candle(start, end, None, price or 0)


def opens(
    tape: Tape,
    interval: str,
    offset_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    now_ms: int,
) -> list[int]:
    """The open times Binance answers for a range, oldest first.

    No times: the latest ``limit`` windows, ending with the open one. ``startTime``: the first
    ``limit`` windows opening at or after it; with ``endTime`` too, only those opening at or
    before it. ``endTime`` alone: the last ``limit`` windows opening at or before it.
    """
    first = open_of(tape.first_time(), interval, offset_ms)
    last = open_of(now_ms, interval, offset_ms)
    if end_ms is not None:
        last = min(last, open_of(end_ms, interval, offset_ms))
    found: list[int] = []
    if start_ms is None:
        w = last
        while w >= first and len(found) < limit:
            found.append(w)
            w = previous_open(w, interval, offset_ms)
        found.reverse()
        return found
    w = open_of(start_ms, interval, offset_ms)
    if w < start_ms:
        w = next_open(w, interval, offset_ms)
    w = max(w, first)
    while w <= last and len(found) < limit:
        found.append(w)
        w = next_open(w, interval, offset_ms)
    return found


def rows(tape: Tape, interval: str, offset_ms: int, starts: list[int]) -> list[list[Any]]:
    """The rows of consecutive windows."""
    out: list[list[Any]] = []
    close: int | None = None
    for start in starts:
        c = candle(tape, interval, offset_ms, start, close)
        close = c.price
        out.append(c.row())
    return out
