"""The full order book of a symbol: how the messenger stores its local book and the server reads it.

The messenger keeps a local book per symbol from the diff depth stream (``<symbol>@depth@100ms``,
Binance's "How to manage a local order book correctly"): messenger.order_books. The server answers
``/api/v3/depth`` (any limit up to 5,000) and Transmute's own ``depth`` kind from it.

Redis holds one record per symbol under ``transmute:depth:<symbol>:{b}`` (contract.keys.snapshot_key),
vouched for like every record (contract.servable), written at most once per diff event (every
100 ms). It holds only the top levels the server needs: the tier (BOOK_TIERS) of the deepest limit
asked for in the last DEMAND_IDLE_S, at least the default's, never more than the snapshot depth.
The server registers the tier it needs in WANTED_KEY.

A record is a JSON object (the first fields as every record: ``voucher``, ``order``; its last
``ts``, ``as_of``, ``source``, ``connection``), with the levels as pre-encoded JSON arrays so that a
request for N levels is a slice of the stored bytes, not a parse of thousands of levels. Its order
(contract.ordering.book_order) is its update id, the levels written, and the levels held::

    {"voucher": "transmute:voucher:5f3a9c1e:1",
     "order": "000000000000000001600000000000000000010000000000000000000200",
     "symbol": "BTCUSDT", "update_id": 160,
     "levels": 100,          # the tier written: at most this many levels per side
     "limit": 1000,          # the snapshot depth the book was synchronized from
     "counts": [100, 100],   # levels held per side (bids, asks)
     "partial": [false, false],  # a side stops short of ``levels`` because no more is known exactly
     "cuts": [[b, a], ...],  # byte offsets in the bids / asks arrays' contents after 100, 200, ... levels
     "bids": [["0.0024", "10"], ...],  # best first: descending prices
     "asks": [["0.0026", "100"], ...], # ascending prices
     "ts": ..., "as_of": ..., "source": "stream", "connection": 1}

Every level held is exact: the book as the exchange had it at ``update_id``. Levels beyond what
the last snapshot covered are never held: a side that stops short of ``levels`` for that reason
says so in ``partial`` (Binance's own snapshots stop at 5,000 levels; a deeper level is unknown
until it changes).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from contract import kinds
from contract.keys import CONTROL_PREFIX
from contract.records import MalformedRecord

DEPTH = kinds.DEPTH  # the kind: Binance's diff depth stream, kept as a full local book
DEFAULT_LIMIT = 100  # /api/v3/depth's default, as Binance's
MAX_LIMIT = 5000  # Binance's largest snapshot and /api/v3/depth limit
# Levels per side written to Redis: the smallest tier at or above the deepest limit asked for.
# Binance's weight tiers of /api/v3/depth (1-100: 5, 101-500: 25, 501-1000: 50, 1001-5000: 250).
BOOK_TIERS = (100, 500, 1000, 5000)
CUT_EVERY = 100
# Sorted set: ``<SYMBOL>:<tier>`` scored by when a request last needed that tier (epoch ms).
WANTED_KEY = CONTROL_PREFIX + "depth:wanted"
# Hash: SYMBOL -> why its book has no record now, one of UNSYNCED_REASONS (optional: written by
# the messenger while a book it carries is not in sync, removed once it is). The server only
# reports it (metrics, the status page, the error's message); what it serves is the record alone.
UNSYNCED_KEY = CONTROL_PREFIX + "depth:unsynced"
UNSYNCED_REASONS = {
    "syncing": "its order book is being synchronized",  # first snapshot not applied yet
    "resyncing": "its order book is resynchronizing",  # a gap in update ids: synchronizing again
    "out_of_sync": "its order book is out of sync",  # e.g. snapshots delayed or refused
}


def tier(limit: int) -> int:
    """The tier a request of ``limit`` levels needs (``limit`` above MAX_LIMIT: the last)."""
    i = bisect_left(BOOK_TIERS, limit)
    return BOOK_TIERS[min(i, len(BOOK_TIERS) - 1)]


def wanted_member(symbol: str, levels: int) -> str:
    """The member of WANTED_KEY for a symbol's tier: ``BTCUSDT:1000``."""
    return f"{symbol}:{levels}"


def parse_wanted_member(member: str) -> tuple[str, int] | None:
    """(SYMBOL, tier) of a WANTED_KEY member, or None if it is not one."""
    symbol, sep, levels = member.rpartition(":")
    if not sep or not symbol or not levels.isdigit() or int(levels) not in BOOK_TIERS:
        return None
    return symbol, int(levels)


def level_bytes(price: str, quantity: str) -> bytes:
    """One level as the JSON Binance sends: ``["0.0024","10"]``."""
    return f'["{price}","{quantity}"]'.encode()


def _joined(levels: Sequence[bytes]) -> tuple[bytes, list[int]]:
    """The levels joined with commas, and the byte offset after every CUT_EVERY-th level."""
    ends = list(accumulate(map(len, levels)))  # ends[i]: bytes of levels 0..i, without commas
    return b",".join(levels), [ends[n - 1] + n - 1 for n in range(CUT_EVERY, len(levels) + 1, CUT_EVERY)]


def book_fields(
    symbol: str,
    update_id: int,
    levels: int,
    limit: int,
    bids: Sequence[bytes],
    asks: Sequence[bytes],
    partial: tuple[bool, bool],
) -> dict[str, Any]:
    """The record fields of a book: ``bids`` / ``asks`` are its top levels (level_bytes), best first."""
    bid_body, bid_cuts = _joined(bids)
    ask_body, ask_cuts = _joined(asks)
    # A side may have more cuts than the other: the shorter one's are padded with its end.
    n = max(len(bid_cuts), len(ask_cuts))
    bid_cuts += [len(bid_body)] * (n - len(bid_cuts))
    ask_cuts += [len(ask_body)] * (n - len(ask_cuts))
    cuts = [[b, a] for b, a in zip(bid_cuts, ask_cuts, strict=True)]
    return {
        "symbol": symbol,
        "update_id": update_id,
        "levels": levels,
        "limit": limit,
        "counts": [len(bids), len(asks)],
        "partial": list(partial),
        "cuts": cuts,
        "bids": orjson.Fragment(b"[" + bid_body + b"]"),
        "asks": orjson.Fragment(b"[" + ask_body + b"]"),
    }


_BIDS = b',"bids":['
_ASKS = b'],"asks":['
_TAIL = b'],"ts":'


@dataclass(frozen=True, slots=True)
class StoredBook:
    """A stored book record, read without parsing its levels: see ``read_book``."""

    head: dict[str, Any]  # every field but bids and asks (voucher included, if stored)
    raw: bytes
    bid_span: tuple[int, int]  # where the bids array's content is in raw
    ask_span: tuple[int, int]

    @property
    def counts(self) -> tuple[int, int]:
        """Levels held per side."""
        bids, asks = self.head["counts"]
        return int(bids), int(asks)

    def side(self, which: int, limit: int) -> bytes:
        """The content of a side's JSON array (0 bids, 1 asks) cut to its top ``limit`` levels."""
        start, end = self.span(which, limit)
        return self.raw[start:end]

    def span(self, which: int, limit: int) -> tuple[int, int]:
        """Where ``side(which, limit)`` is in ``raw`` (to join it without a copy of its own)."""
        start, end = self.bid_span if which == 0 else self.ask_span
        count = self.counts[which]
        if limit >= count:
            return start, end
        if limit <= 0:
            return start, start
        cuts = self.head["cuts"]
        full, rest = divmod(limit, CUT_EVERY)
        at = start if full == 0 else start + int(cuts[full - 1][which]) + 1
        raw = self.raw
        for _ in range(rest):
            at = raw.index(b"]", at) + 2  # past the level's closing bracket and the comma after it
        return start, at - 1

    def levels(self, which: int, limit: int) -> list[list[str]]:
        """A side's top ``limit`` levels as [price, quantity] lists (tests, small answers)."""
        out: list[list[str]] = orjson.loads(b"[" + self.side(which, limit) + b"]")
        return out


def read_book(raw: bytes) -> StoredBook:
    """A stored book record, its levels left as bytes; raises MalformedRecord if it is not one.

    The bids' end is looked for from their last cut on, so thousands of levels are not scanned.
    """
    try:
        start = raw.index(_BIDS) + len(_BIDS)
        end = raw.rindex(_TAIL)
        head = orjson.loads(raw[: start - len(_BIDS)] + b"," + raw[end + 2 :])
        if not isinstance(head, dict) or not isinstance(head.get("counts"), list):
            raise MalformedRecord("book record lacks its counts")
        cuts = head.get("cuts") or []
        full = min(int(head["counts"][0]) // CUT_EVERY, len(cuts))
        middle = raw.index(_ASKS, start + int(cuts[full - 1][0]) if full else start, end)
    except (ValueError, TypeError, IndexError, orjson.JSONDecodeError) as exc:
        raise MalformedRecord(f"not a book record: {exc}") from None
    return StoredBook(head, raw, (start, middle), (middle + len(_ASKS), end))
