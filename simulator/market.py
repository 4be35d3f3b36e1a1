"""Simulated top-of-book per symbol: a random walk with Binance's payload shapes.

Prices are integers of 1e-8 and leave as 8-decimal strings, as Binance spot sends them.
The update id ``u`` strictly increases per symbol, so a client can order updates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_SCALE = 10**8


def _fmt(units: int) -> str:
    return f"{units // _SCALE}.{units % _SCALE:08d}"


def _parse(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * _SCALE + int((frac + "00000000")[:8])


@dataclass(slots=True)
class Book:
    """Best bid and ask of one symbol, as integers of 1e-8."""

    symbol: str
    u: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int

    def payload(self) -> bytes:
        """The raw ``<symbol>@bookTicker`` event, exactly as Binance spot spells it."""
        return (
            f'{{"u":{self.u},"s":"{self.symbol}","b":"{_fmt(self.bid)}","B":"{_fmt(self.bid_qty)}",'
            f'"a":"{_fmt(self.ask)}","A":"{_fmt(self.ask_qty)}"}}'
        ).encode()

    def rest(self) -> dict[str, str]:
        """The ``GET /api/v3/ticker/bookTicker`` entry (no update id: Binance sends none)."""
        return {
            "symbol": self.symbol,
            "bidPrice": _fmt(self.bid),
            "bidQty": _fmt(self.bid_qty),
            "askPrice": _fmt(self.ask),
            "askQty": _fmt(self.ask_qty),
        }

    def strings(self) -> dict[str, str | int]:
        """The current state with prices as strings (for the control API)."""
        return {"u": self.u, **self.rest()}


class Market:
    """All books; created on first use from a per-symbol seed so runs are repeatable."""

    def __init__(self, seed: int = 1) -> None:
        self._seed = seed
        self._books: dict[str, Book] = {}
        self._rng = random.Random(seed)

    def book(self, symbol: str) -> Book:
        """The book of a symbol, created with a plausible price on first use."""
        book = self._books.get(symbol)
        if book is None:
            rng = random.Random(f"{self._seed}:{symbol}")
            mid = int(10 ** rng.uniform(-3, 4.5) * _SCALE) + 100
            spread = max(1, mid // 5000)
            book = Book(
                symbol=symbol,
                u=rng.randrange(10**8, 10**9),
                bid=mid - spread,
                bid_qty=rng.randrange(1, 10**4) * _SCALE // 100,
                ask=mid + spread,
                ask_qty=rng.randrange(1, 10**4) * _SCALE // 100,
            )
            self._books[symbol] = book
        return book

    def step(self, symbol: str) -> Book:
        """Move one symbol's book one random step; returns the new state."""
        book = self.book(symbol)
        rng = self._rng
        book.u += rng.randint(1, 4)
        spread = max(1, book.bid // 5000)
        move = rng.random()
        if move < 0.3:
            book.bid_qty = rng.randrange(1, 10**4) * _SCALE // 100
        elif move < 0.6:
            book.ask_qty = rng.randrange(1, 10**4) * _SCALE // 100
        else:
            delta = rng.choice((-1, 1)) * spread
            book.bid = max(1, book.bid + delta)
            book.ask = max(book.bid + 1, book.ask + delta)
        return book

    def set(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str, u: int | None = None) -> Book:
        """Put a given top of book (strings as Binance sends them); u moves forward unless given."""
        book = self.book(symbol)
        book.u = book.u + 1 if u is None else u
        book.bid, book.bid_qty = _parse(bid), _parse(bid_qty)
        book.ask, book.ask_qty = _parse(ask), _parse(ask_qty)
        return book
