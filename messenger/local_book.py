"""One symbol's local order book: a REST snapshot with the diff events after it applied.

Only exact levels are held. A snapshot of ``limit`` levels that comes back full says nothing of
the levels behind its last one, so that price is the side's boundary: a change beyond it is not
kept (a level there may exist unseen), and the side holds fewer exact levels as the book eats
into it. A snapshot side shorter than ``limit`` is the whole side: it has no boundary.

Prices are kept as exact integers (the decimal string with its point removed, scaled to a fixed
number of decimals) for ordering, and each level as the JSON bytes it is served as.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from contract.order_book import level_bytes

# Decimals a price is scaled to for ordering: more than Binance ever sends (8).
SCALE_DECIMALS = 16


class BadLevel(ValueError):
    """A level that is not [price, quantity] as decimal strings."""


_SCALES = tuple(10**n for n in range(SCALE_DECIMALS, -1, -1))  # _SCALES[d]: for d decimals


def price_key(price: str) -> int:
    """An exact integer that orders prices as numbers: ``"0.00240000"`` -> 24 * 10**12."""
    whole, _, frac = price.partition(".")
    digits = whole + frac
    if not whole or len(frac) > SCALE_DECIMALS or not (digits.isascii() and digits.isdigit()):
        raise BadLevel(f"price {price[:40]!r} is not a decimal")
    key: int = int(digits) * _SCALES[len(frac)]
    return key


def is_zero(quantity: str) -> bool:
    """Whether a quantity string is zero (the level is removed)."""
    return not quantity.strip("0.")


class Side:
    """One side of the book, best level first. Bids order by descending price: keys are negated.

    ``keys`` (ascending: best first) and ``encoded`` (each level as served) stay aligned, so the top
    N levels are one slice.
    """

    __slots__ = ("boundary", "encoded", "keys", "sign")

    def __init__(self, descending: bool) -> None:
        self.sign = -1 if descending else 1
        self.keys: list[int] = []
        self.encoded: list[bytes] = []
        self.boundary: int | None = None  # the last exact key; None: the whole side is known

    def load(self, levels: Sequence[Any], limit: int) -> None:
        """The side of a snapshot asked for with ``limit`` levels, best first."""
        found: dict[int, bytes] = {}
        for level in levels:
            price, quantity = _level(level)
            if not is_zero(quantity):
                found[self.sign * price_key(price)] = level_bytes(price, quantity)
        self.keys = sorted(found)
        self.encoded = [found[k] for k in self.keys]
        self.boundary = self.keys[-1] if len(levels) >= limit and self.keys else None

    def set(self, price: str, quantity: str) -> None:
        """Apply one changed level (quantity 0: removed)."""
        if type(quantity) is not str:
            raise BadLevel("a quantity is not a string")
        key = self.sign * price_key(price)
        if self.boundary is not None and key > self.boundary:
            return  # behind the last exact level: unknown, not kept
        keys = self.keys
        i = bisect_left(keys, key)
        held = i < len(keys) and keys[i] == key
        if is_zero(quantity):
            if held:
                del keys[i]
                del self.encoded[i]
        elif held:
            self.encoded[i] = level_bytes(price, quantity)
        else:
            keys.insert(i, key)
            self.encoded.insert(i, level_bytes(price, quantity))

    def top(self, n: int) -> list[bytes]:
        """The best ``n`` levels as served."""
        return self.encoded[:n]

    def __len__(self) -> int:
        return len(self.keys)


def _level(level: Any) -> tuple[str, str]:
    if not isinstance(level, list | tuple) or len(level) != 2:
        raise BadLevel("a level is not [price, quantity]")
    price, quantity = level
    if type(price) is not str or type(quantity) is not str:
        raise BadLevel("a level's price or quantity is not a string")
    return price, quantity


class LocalBook:
    """A book in sync from a snapshot: ``update_id`` is the last change it includes."""

    __slots__ = ("asks", "bids", "limit", "update_id")

    def __init__(self, snapshot: Any, limit: int) -> None:
        """From ``GET /api/v3/depth?limit=<limit>``'s answer; raises BadLevel if it is not one."""
        if not isinstance(snapshot, dict) or type(snapshot.get("lastUpdateId")) is not int:
            raise BadLevel("the snapshot has no lastUpdateId")
        bids, asks = snapshot.get("bids"), snapshot.get("asks")
        if not isinstance(bids, list) or not isinstance(asks, list):
            raise BadLevel("the snapshot has no bids or asks")
        self.update_id: int = snapshot["lastUpdateId"]
        self.limit = limit
        self.bids = Side(descending=True)
        self.asks = Side(descending=False)
        self.bids.load(bids, limit)
        self.asks.load(asks, limit)

    def apply(self, bids: Sequence[Any], asks: Sequence[Any], update_id: int) -> None:
        """One event's changes (final quantities), after which the book is at ``update_id``.

        Raises BadLevel on a malformed level: the book is then no longer known to be right.
        """
        try:
            for price, quantity in bids:
                self.bids.set(price, quantity)
            for price, quantity in asks:
                self.asks.set(price, quantity)
        except (TypeError, ValueError, AttributeError) as exc:  # BadLevel is a ValueError
            raise BadLevel(f"a level is not [price, quantity] as decimal strings ({exc})") from None
        self.update_id = update_id

    def top(self, n: int) -> tuple[list[bytes], list[bytes], tuple[bool, bool]]:
        """The best ``n`` levels per side, and per side whether fewer are held for want of knowledge."""
        bids, asks = self.bids.top(n), self.asks.top(n)
        partial = (
            len(bids) < n and self.bids.boundary is not None,
            len(asks) < n and self.asks.boundary is not None,
        )
        return bids, asks, partial

    def shallower_than(self, n: int) -> bool:
        """Whether a side known only in part (it has a boundary) holds fewer than ``n`` levels."""
        return any(side.boundary is not None and len(side) < n for side in (self.bids, self.asks))

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)
