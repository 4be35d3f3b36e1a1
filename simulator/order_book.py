"""A symbol's full order book: price levels per side, changed one level at a time.

Every change of one level's quantity is one update, and moves the book's update id on by 1, as
Binance numbers them (a diff depth event from ``U`` to ``u`` carries ``u - U + 1`` changes at
most: a level changed twice in an interval appears once, with its final quantity). Prices and
quantities are integers of 1e-8, like everything in simulator/market.py.

The book is made on demand (simulator/market.py ``Market.order_book``) around the symbol's top of
book at that moment, ``levels`` deep per side (default 6,000, so a 5,000-level snapshot is a real
cut), and then moved by random limit orders, cancels and trades (``random_change``). Far levels
are added or taken away so that each side stays ``levels`` deep: on Binance, too, orders come and
go far from the touch.

A bounded journal keeps the last changes (each one's side, price and previous quantity), so the
book as it was at any update id it covers is the current book with later changes undone
(``at``): the oracle of ``GET /_sim/book?at=N``.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from simulator.stats import SCALE

BID, ASK = 0, 1
GAPS, GAP_WEIGHTS = (1, 2, 3), (70, 15, 15)  # ticks between neighbouring levels, and how often
Level = tuple[int, int]  # (price, quantity), integers of 1e-8


class Side:
    """One side's levels, best first. Keys ascending: a bid's key is minus its price."""

    __slots__ = ("keys", "qtys", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # -1 for bids, +1 for asks
        self.keys = array("q")
        self.qtys = array("q")

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, price: int) -> int:
        """A level's quantity (0: no such level)."""
        key = self.sign * price
        i = bisect_left(self.keys, key)
        return self.qtys[i] if i < len(self.keys) and self.keys[i] == key else 0

    def put(self, price: int, qty: int) -> int:
        """Set a level's quantity (0 removes it); returns the quantity it had (0: none)."""
        key = self.sign * price
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            old = self.qtys[i]
            if qty:
                self.qtys[i] = qty
            else:
                del keys[i]
                del self.qtys[i]
            return old
        if qty:
            keys.insert(i, key)
            self.qtys.insert(i, qty)
        return 0

    def price(self, i: int) -> int:
        """The price of the i-th best level."""
        return self.sign * self.keys[i]

    def qty(self, i: int) -> int:
        """The quantity of the i-th best level."""
        return self.qtys[i]

    def top(self, n: int | None = None) -> list[Level]:
        """The best ``n`` levels (all: None), best first."""
        sign, keys, qtys = self.sign, self.keys, self.qtys
        count = len(keys) if n is None else min(n, len(keys))
        return [(sign * keys[i], qtys[i]) for i in range(count)]

    def copy(self) -> Side:
        """An independent copy."""
        other = Side(self.sign)
        other.keys = array("q", self.keys)
        other.qtys = array("q", self.qtys)
        return other


Pending = tuple[dict[int, int], dict[int, int]]  # levels changed since a diff event: bids, asks


class OrderBook:
    """One symbol's book, its update id, and the journal of its last changes."""

    def __init__(self, update_id: int, levels: int, journal_size: int) -> None:
        self.update_id = update_id
        self.created_id = update_id
        self.target = max(1, levels)
        self.sides = (Side(-1), Side(1))
        self.tick = 1
        self.journal_size = max(1, journal_size)
        self._keys = array("q")  # per change: the price, negative for an ask
        self._olds = array("q")  # per change: the quantity before it
        # Every diff feed of this symbol (simulator/depth_feed.py) collects what changes here.
        self.watchers: list[Pending] = []

    @classmethod
    def around(
        cls, top: tuple[int, int, int, int], update_id: int, levels: int, journal_size: int, seed: str
    ) -> OrderBook:
        """A book whose best levels are ``top`` (bid, bid qty, ask, ask qty), ``levels`` deep, at
        ``update_id`` (made as it is: its making is no change)."""
        bid, bid_qty, ask, ask_qty = top
        book = cls(update_id, levels, journal_size)
        rng = random.Random(seed)
        book.tick = tick = max(1, bid // 200_000)
        more = book.target - 1
        for levels_of, best, best_qty in ((book.sides[BID], bid, bid_qty), (book.sides[ASK], ask, ask_qty)):
            # Sorted as made (keys ascending from the best), so the arrays are built, not inserted into.
            gaps = rng.choices(GAPS, GAP_WEIGHTS, k=more)
            keys = [levels_of.sign * best, *(levels_of.sign * best + tick * g for g in accumulate(gaps))]
            if levels_of.sign < 0:
                keys = [k for k in keys if k <= -1]  # bids above 0 only
            levels_of.keys = array("q", keys)
            levels_of.qtys = array("q", [best_qty, *(_quantity(rng) for _ in range(len(keys) - 1))])
        return book

    # -- changes ----------------------------------------------------------------------

    def change(self, side: int, price: int, qty: int) -> bool:
        """Set one level (0 removes it): one update, journaled and told to the diff feeds.
        False if it already was so (no update)."""
        levels = self.sides[side]
        old = levels.put(price, qty)
        if old == qty:
            return False
        self.update_id += 1
        n = self.update_id - self.created_id - 1  # changes before this one
        key = price if side == BID else -price
        if n < self.journal_size:
            self._keys.append(key)
            self._olds.append(old)
        else:
            at = n % self.journal_size
            self._keys[at] = key
            self._olds[at] = old
        for pending in self.watchers:
            pending[side][price] = qty
        return True

    def best(self) -> tuple[int, int, int, int]:
        """(best bid, its qty, best ask, its qty); 0s for an empty side."""
        bids, asks = self.sides
        bid = (bids.price(0), bids.qty(0)) if len(bids) else (0, 0)
        ask = (asks.price(0), asks.qty(0)) if len(asks) else (0, 0)
        return bid[0], bid[1], ask[0], ask[1]

    def random_change(self, rng: random.Random, trades: bool) -> tuple[int, int, bool] | None:
        """A random limit order, cancel or (if ``trades``) trade, with the far levels it brings;
        a trade's (price, qty, buyer is maker) if one happened."""
        side = BID if rng.random() < 0.5 else ASK
        levels = self.sides[side]
        move = rng.random()
        trade = None
        if not len(levels):
            pass  # refilled below
        elif trades and move < 0.2:  # a market order meets the best level of this side
            price, qty = levels.price(0), levels.qty(0)
            taken = qty if qty < 2 or rng.random() < 0.3 else rng.randrange(1, qty)
            self.change(side, price, qty - taken)
            trade = (price, taken, side == BID)  # a seller hit the bid: the buyer was the maker
        elif move < 0.6:
            self._add(side, rng)
        else:
            i = self._index(len(levels), rng)
            qty = levels.qty(i)
            self.change(side, levels.price(i), 0 if qty < 2 or rng.random() < 0.5 else rng.randrange(1, qty))
        self._keep_depth(side, rng)
        return trade

    def _add(self, side: int, rng: random.Random) -> None:
        levels, other = self.sides[side], self.sides[1 - side]
        if len(other):  # inside the spread, if there is room: more often the wider it is
            room = (other.price(0) - levels.price(0)) * -levels.sign // self.tick - 1
            if room > 0 and rng.random() < (0.3 if room > 3 else 0.1):
                self.change(side, levels.price(0) - levels.sign * self.tick * rng.randint(1, min(room, 3)),
                            _quantity(rng))  # fmt: skip
                return
        best, span = levels.price(0), abs(levels.price(len(levels) - 1) - levels.price(0)) // self.tick
        # Ticks away from the best: mostly near it, now and then anywhere in the book.
        away = int(rng.expovariate(1 / 15)) if rng.random() < 0.85 else rng.randint(0, span)
        price = best + levels.sign * self.tick * away
        if price >= 1:
            self.change(side, price, levels.get(price) + _quantity(rng))

    @staticmethod
    def _index(count: int, rng: random.Random) -> int:
        """Which level a change touches: mostly near the touch, now and then anywhere."""
        if rng.random() < 0.85:
            return min(count - 1, int(rng.expovariate(1 / 15)))
        return rng.randrange(count)

    def _outward(self, side: int, price: int, rng: random.Random) -> int:
        """A price beyond ``price``, away from the touch (a gap of 1 to 3 ticks, mostly 1)."""
        [gap] = rng.choices(GAPS, GAP_WEIGHTS)
        return price + self.sides[side].sign * self.tick * gap

    def _keep_depth(self, side: int, rng: random.Random) -> None:
        levels, other = self.sides[side], self.sides[1 - side]
        while len(levels) > self.target:
            self.change(side, levels.price(len(levels) - 1), 0)
        while len(levels) < self.target:
            # All taken: start again next to the other side's best.
            last = levels.price(len(levels) - 1) if len(levels) else other.price(0) if len(other) else SCALE
            price = self._outward(side, last, rng)
            if price < 1:
                return
            self.change(side, price, _quantity(rng))

    def resize(self, levels: int, rng: random.Random) -> None:
        """Make both sides ``levels`` deep now (far levels added or cancelled, each an update)."""
        self.target = max(1, levels)
        for side in (BID, ASK):
            self._keep_depth(side, rng)

    def set_top(self, bid: int, bid_qty: int, ask: int, ask_qty: int, rng: random.Random) -> None:
        """Make these the best levels: better (and crossing) levels go, these are set."""
        bids, asks = self.sides
        while len(bids) and (bids.price(0) > bid or bids.price(0) >= ask):
            self.change(BID, bids.price(0), 0)
        while len(asks) and (asks.price(0) < ask or asks.price(0) <= bid):
            self.change(ASK, asks.price(0), 0)
        self.change(BID, bid, bid_qty)
        self.change(ASK, ask, ask_qty)
        self.resize(self.target, rng)

    # -- reading ----------------------------------------------------------------------

    def oldest(self) -> int:
        """The oldest update id the journal can go back to."""
        return max(self.created_id, self.update_id - self.journal_size)

    def at(self, update_id: int) -> tuple[Side, Side]:
        """Both sides as they were at ``update_id`` (within ``oldest()`` and now): copies, with
        the later changes undone newest first."""
        if not self.oldest() <= update_id <= self.update_id:
            raise LookupError(update_id)
        bids, asks = self.sides[BID].copy(), self.sides[ASK].copy()
        for k in self._undo_positions(update_id):
            key, old = self._keys[k], self._olds[k]
            if key > 0:
                bids.put(key, old)
            else:
                asks.put(-key, old)
        return bids, asks

    def _undo_positions(self, update_id: int) -> Iterator[int]:
        """Journal positions of the changes after ``update_id``, newest first."""
        for change in range(self.update_id, update_id, -1):
            yield (change - self.created_id - 1) % self.journal_size


def _quantity(rng: random.Random) -> int:
    """A random level quantity: 0.01 to 100 (as the top of book's)."""
    return rng.randrange(1, 10**4) * SCALE // 100
