"""What a run of consecutive trades adds up to: the numbers of a candle or of a rolling window.

Prices and quantities are integers of 1e-8 (as Binance spot's 8-decimal strings); a trade's quote
quantity is rounded down once, per trade (``price * qty // 1e8``, what ``quoteQty`` says), so the
quote volume of any window is exactly the sum of its parts' and a 1 h candle is exactly its 1 m
candles added up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCALE = 10**8


def fmt(units: int) -> str:
    """Integer units of 1e-8 as Binance's 8-decimal string: ``12345`` -> ``"0.00012345"``."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // SCALE}.{units % SCALE:08d}"


def parse(text: str) -> int:
    """Binance's decimal string as integer units of 1e-8."""
    whole, _, frac = text.partition(".")
    return int(whole) * SCALE + int((frac + "00000000")[:8])


def quote_of(price: int, qty: int) -> int:
    """A trade's quote quantity, rounded down to 1e-8 as Binance's ``quoteQty``."""
    return price * qty // SCALE


@dataclass(slots=True)
class Stats:
    """Trades ``first_id`` to ``last_id``, consecutive and in time order, added up."""

    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    taker_volume: int  # bought by takers (the buyer was not the maker)
    taker_quote: int
    count: int
    first_id: int
    last_id: int

    @classmethod
    def of_trade(cls, trade_id: int, price: int, qty: int, buyer_is_maker: bool) -> Stats:
        """One trade's."""
        quote = quote_of(price, qty)
        taker, taker_quote = (0, 0) if buyer_is_maker else (qty, quote)
        return cls(price, price, price, price, qty, quote, taker, taker_quote, 1, trade_id, trade_id)

    def add_trade(self, trade_id: int, price: int, qty: int, buyer_is_maker: bool) -> None:
        """Take in the next trade (in place)."""
        quote = quote_of(price, qty)
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += qty
        self.quote += quote
        if not buyer_is_maker:
            self.taker_volume += qty
            self.taker_quote += quote
        self.count += 1
        self.last_id = trade_id

    def then(self, later: Stats) -> Stats:
        """These trades followed by ``later``'s (a new object)."""
        return Stats(
            self.open,
            max(self.high, later.high),
            min(self.low, later.low),
            later.close,
            self.volume + later.volume,
            self.quote + later.quote,
            self.taker_volume + later.taker_volume,
            self.taker_quote + later.taker_quote,
            self.count + later.count,
            self.first_id,
            later.last_id,
        )


def combine(parts: Iterable[Stats | None]) -> Stats | None:
    """Consecutive parts (oldest first, None for a part without trades) added up."""
    total: Stats | None = None
    for part in parts:
        if part is not None:
            total = part if total is None else total.then(part)
    return total


def of_trades(
    first_id: int, prices: Sequence[int], qtys: Sequence[int], makers: Sequence[int], lo: int, hi: int
) -> Stats | None:
    """The trades at positions ``lo`` to ``hi - 1`` of parallel sequences (``first_id``: the id at ``lo``)."""
    if lo >= hi:
        return None
    total = Stats.of_trade(first_id, prices[lo], qtys[lo], bool(makers[lo]))
    add = total.add_trade
    for n in range(lo + 1, hi):
        add(first_id + n - lo, prices[n], qtys[n], bool(makers[n]))
    return total
