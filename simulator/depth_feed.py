"""The diff depth streams: ``<symbol>@depth@100ms`` and ``<symbol>@depth`` (1,000 ms).

Each subscribed stream collects the levels its symbol's book (simulator/order_book.py) changes,
and every 100 ms or 1 s sends them as one event, as Binance does::

    {"e": "depthUpdate", "E": 1672515782136, "s": "BNBBTC",
     "U": 157,                  # first update id in the event: the previous event's u + 1
     "u": 160,                  # final update id in the event: the book's update id when sent
     "b": [["0.00240000", "10.00000000"]],   # bids changed, best first, final quantities
     "a": [["0.00260000", "0.00000000"]]}    # asks changed; a quantity of 0 removes the level

An interval without changes sends nothing. Every connection subscribed to a stream gets the same
events; the per-connection faults (``drop_diff``: the next event of a symbol is not sent;
``swap_diff``: the next two are sent in the wrong order) are applied in ``deliver``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from simulator.clock import now_ms
from simulator.order_book import OrderBook, Pending
from simulator.stats import fmt

if TYPE_CHECKING:
    from simulator.market import Market

TICKS_100MS = 1  # in ticks of simulator/timed.py (100 ms)
TICKS_1S = 10


def is_diff(kind: str) -> bool:
    """Whether a stream kind is diff depth: ``depth``, ``depth@100ms``, ``depth@1000ms``."""
    return kind == "depth" or kind.startswith("depth@")


@dataclass(slots=True)
class Feed:
    """One diff stream: its symbol's book, and what changed since its last event."""

    symbol: str
    book: OrderBook
    every: int  # ticks between events
    next_first: int  # U of the next event
    pending: Pending = field(default_factory=lambda: ({}, {}))


class DiffFeeds:
    """Every subscribed diff depth stream."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.feeds: dict[str, Feed] = {}

    def add(self, stream: str, symbol: str, kind: str) -> None:
        """A diff stream has its first subscriber: its book is made if need be, and watched."""
        if stream in self.feeds:
            return
        book = self.market.order_book(symbol)
        feed = Feed(symbol, book, TICKS_100MS if kind.endswith("@100ms") else TICKS_1S, book.update_id + 1)
        book.watchers.append(feed.pending)
        self.feeds[stream] = feed

    def remove(self, stream: str) -> None:
        """A diff stream has lost its last subscriber."""
        feed = self.feeds.pop(stream, None)
        if feed is not None:
            feed.book.watchers.remove(feed.pending)

    def due(self, tick: int) -> list[tuple[str, str, bytes]]:
        """(stream, symbol, event) for each stream due at this tick that has changes."""
        events = []
        for stream, feed in self.feeds.items():
            if tick % feed.every == 0 and (feed.pending[0] or feed.pending[1]):
                events.append((stream, feed.symbol, self._event(feed)))
        return events

    @staticmethod
    def _event(feed: Feed) -> bytes:
        bids, asks = feed.pending
        last = feed.book.update_id
        event = {
            "e": "depthUpdate",
            "E": now_ms(),
            "s": feed.symbol,
            "U": feed.next_first,
            "u": last,
            "b": [[fmt(p), fmt(q)] for p, q in sorted(bids.items(), reverse=True)],
            "a": [[fmt(p), fmt(q)] for p, q in sorted(asks.items())],
        }
        bids.clear()
        asks.clear()
        feed.next_first = last + 1
        return orjson.dumps(event)


# -- per-connection faults ------------------------------------------------------------------

DROP, SWAP = "drop_diff", "swap_diff"


@dataclass(slots=True)
class DiffFault:
    """A fault armed on one connection for one symbol's next diff event(s)."""

    name: str  # DROP or SWAP
    held: bytes | None = None  # SWAP: the first event, held until the second is sent


def deliver(faults: dict[str, DiffFault], symbol: str, frame: bytes) -> tuple[list[bytes], str | None]:
    """The frames to send a connection for a diff event of ``symbol``, given its armed faults,
    and the name of a fault this completed (to count it)."""
    fault = faults.get(symbol)
    if fault is None:
        return [frame], None
    if fault.name == DROP:
        del faults[symbol]
        return [], DROP
    if fault.held is None:
        fault.held = frame
        return [], None
    del faults[symbol]
    return [frame, fault.held], SWAP
