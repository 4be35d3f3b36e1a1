"""Full order books (contract.order_book): a symbol's book to any depth, from one read of its record.

Every API serves books through here: ``GET /api/v3/depth``, ``POST /snapshot/<SYMBOL>/depth``,
``/snapshots`` and ``/stream/<SYMBOL>/depth``. A request for N levels reads the symbol's record
through the shared read rule (contract.servable's script: served only while its connection
vouches for it) and cuts each side to N levels from the stored bytes; the levels are never
parsed. The same round trip counts the request as demand and registers the tier of levels it
needs (WANTED_KEY, ZADD GT), both at most once a second per process, so that the messenger keeps
writing as many levels as are asked for.

A record holding fewer levels than asked for, while the messenger could write more, is waited
for (DEMAND_WAIT_MS in all) in its deeper tier. What is served is always exact: a side the
messenger cannot know deeper than it holds (beyond its last snapshot's depth) is answered with the
levels held, and named in ``partial`` (and the ``X-Transmute-Depth-Partial`` header).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from contract import kinds
from contract.keys import DEMAND_CHANNEL, DEMAND_KEY, PENDING, snapshot_key
from contract.order_book import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    UNSYNCED_KEY,
    UNSYNCED_REASONS,
    WANTED_KEY,
    StoredBook,
    read_book,
    tier,
    wanted_member,
)
from contract.records import VOUCHER, MalformedRecord, vouchers
from contract.redis_client import publish
from contract.servable import VOUCHED_LUA, CurrentReader, latest_word, pairs
from server import lookup, metrics
from server.store import SnapshotStore, StoreUnavailable

logger = logging.getLogger(__name__)

KIND = kinds.key_kind(kinds.DEPTH)
SIDES = ("bids", "asks")
PARTIAL_HEADER = "X-Transmute-Depth-Partial"
__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "PARTIAL_HEADER", "Book", "BookReader", "Shallow", "served"]
# Members of the store's per-process touch memory (server.store): WANTED_KEY's, set apart.
_WANTED_TOUCH = "wanted "
# The read rule (contract.servable), returning only each record's fields before its levels: what
# the status page shows of a book, without thousands of levels crossing from Redis every second.
HEADS_SCRIPT = (
    VOUCHED_LUA
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local record, heard = vouched(key)
  if record then
    local cut = string.find(record, ',"bids":[', 1, true)
    if cut then record = string.sub(record, 1, cut - 1) .. '}' else record = false end
  end
  out[2 * i - 1], out[2 * i] = record, heard
end
return out
"""
)


class Shallow(lookup.Unavailable):
    """The record holds fewer levels than asked for, and the deeper one did not come in time."""

    def __init__(self, symbol: str, limit: int) -> None:
        super().__init__(
            f"{symbol}'s order book is being written {limit} levels deep; try again in a moment.",
            "levels_pending",
        )


@dataclass(frozen=True, slots=True)
class Book:
    """A servable book record: its levels as stored bytes, ``as_of`` its voucher's last word."""

    stored: StoredBook
    as_of: int

    @property
    def head(self) -> dict[str, Any]:
        """Every field of the record but the levels."""
        return self.stored.head

    def deep_enough(self, limit: int) -> bool:
        """Holds the top ``limit`` levels of each side, or as many as any record could hold now:
        the messenger writes no deeper than its snapshot depth, and a side it holds whole (fewer
        levels than its tier) would be no deeper in a deeper tier."""
        levels = int(self.head["levels"])
        if levels >= min(limit, int(self.head["limit"])):
            return True
        return all(count >= limit or count < levels for count in self.stored.counts)

    def partial(self, limit: int) -> tuple[str, ...]:
        """The sides answered with fewer than ``limit`` levels although the book has more: beyond
        what is known exactly (the record's ``partial``), or beyond the levels written."""
        levels, flags = int(self.head["levels"]), self.head["partial"]
        return tuple(
            SIDES[i]
            for i, count in enumerate(self.stored.counts)
            if count < limit and (flags[i] or count >= levels)
        )

    def binance(self, limit: int) -> bytes:
        """Binance's answer to ``/api/v3/depth?limit=<limit>``: the stored bytes joined, copied once."""
        stored = self.stored
        raw = memoryview(stored.raw)
        bid_start, bid_end = stored.span(0, limit)
        ask_start, ask_end = stored.span(1, limit)
        return b"".join(
            (b'{"lastUpdateId":', str(self.head["update_id"]).encode(), b',"bids":[', raw[bid_start:bid_end],
             b'],"asks":[', raw[ask_start:ask_end], b"]}")
        )  # fmt: skip

    def record(self, limit: int) -> dict[str, Any]:
        """Transmute's record of the top ``limit`` levels (``age_ms`` as of now), for orjson."""
        head = self.head
        side = self.stored.side
        return {
            "symbol": head["symbol"],
            "update_id": head["update_id"],
            "bids": orjson.Fragment(b"[" + side(0, limit) + b"]"),
            "asks": orjson.Fragment(b"[" + side(1, limit) + b"]"),
            "partial": list(self.partial(limit)),
            "ts": head["ts"],
            "as_of": self.as_of,
            "source": head.get("source"),
            "connection": head.get("connection"),
            "age_ms": max(0, int(time.time() * 1000) - self.as_of),
        }

    def top(self, limit: int) -> tuple[bytes, bytes]:
        """The top ``limit`` levels of each side, as stored (to tell whether they changed)."""
        return self.stored.side(0, limit), self.stored.side(1, limit)


def served(raw: Any, heard: Any) -> Book | None:
    """contract.servable's rule for a book record, without parsing its levels: the Book to serve
    from one (record, heard) pair, or None. Raises MalformedRecord if it is not a book record."""
    if raw is None or heard is None:
        return None
    stored = read_book(raw)
    try:
        heard_ms = int(heard)
        as_of = int(stored.head["as_of"])
    except (KeyError, TypeError, ValueError):
        raise MalformedRecord("book record or its voucher holds no time") from None
    return Book(stored, max(as_of, heard_ms))


def _decoded(key: str, raw: Any, heard: Any) -> Book | None:
    """``served``, a record that is not a book logged and taken as none."""
    try:
        return served(raw, heard if heard is not None else 0)
    except MalformedRecord as exc:
        logger.error("books: %s holds no valid record (%s)", key, exc)
        return None


def published(data: bytes) -> Book:
    """A record the messenger just published (its connection vouched for it a moment ago); raises
    MalformedRecord if it is not a book record."""
    stored = read_book(data)
    try:
        return Book(stored, int(stored.head["as_of"]))
    except (KeyError, TypeError, ValueError):
        raise MalformedRecord("book record holds no time") from None


def with_age(book: Book, symbol: str, max_age_ms: int | None) -> Book:
    """The book, or Stale if it was confirmed longer ago than ``max_age_ms``."""
    age_ms = max(0, int(time.time() * 1000) - book.as_of)
    if max_age_ms is not None and age_ms > max_age_ms:
        raise _reason(
            lookup.Stale(
                f"{symbol} was last confirmed current {age_ms} ms ago, over max_age_ms={max_age_ms}."
            ),
            "max_age",
        )
    return book


def _reason(exc: lookup.NoValue, reason: str, message: str | None = None) -> lookup.NoValue:
    """The error with another reason (and message): its class, so its status, stays."""
    exc.reason = reason
    if message is not None:
        exc.args = (message,)
    return exc


def clamp(limit: int) -> int:
    """Binance's rule: more than MAX_LIMIT levels asked for is MAX_LIMIT."""
    return min(limit, MAX_LIMIT)


class BookReader:
    """Reads books for requests: one round trip when the book is there, deep enough."""

    def __init__(self, store: SnapshotStore, wait_s: float) -> None:
        self.store = store
        self.wait_s = wait_s
        self._heads = CurrentReader(store.client, HEADS_SCRIPT)
        self._vouchers: dict[str, str] = {}  # symbol -> the vouchers its record named when last read

    def read(self, symbol: str, limit: int) -> Book | None:
        """The book as it is now (None if there is none), its tier for ``limit`` registered;
        raises StoreUnavailable.

        The read rule is the script's (a record, and at the same instant the vouchers it names), in
        one command that costs no more than a GET: ``MGET`` of the record and the vouchers its last
        read named, kept per symbol. Only if the record names other vouchers now (its connections
        changed) is it read again through the script. (A large value through a Lua script costs
        Redis about 80 us more than a GET: more than the rest of the request.)
        """
        key = snapshot_key(KIND, symbol)
        named = self._vouchers.get(symbol)
        also = self._wanted([symbol], limit)
        if named is not None:
            raw, heard = self._mget(key, named, self.store.due(KIND, [symbol]), also)
            if raw is None:
                return None
            book = _decoded(key, raw, heard)
            if book is not None and book.head.get(VOUCHER) == named:
                return book if heard is not None else None
            also = None  # registered already
        [found] = self.store.snapshots(KIND, [symbol], decode=served, also=also)
        if isinstance(found, Book):
            named = found.head.get(VOUCHER)
            if isinstance(named, str) and named:
                self._vouchers[symbol] = named
            return found
        return None

    def _mget(
        self, key: str, named: str, due: list[str], also: Callable[[Any], None] | None
    ) -> tuple[Any, Any]:
        """The record and the latest word of the vouchers ``named`` (a record's ``voucher``) at one
        instant; demand and tier registered in the same round trip."""
        keys = [key, *vouchers(named)]
        try:
            if not due and also is None:
                raw, *words = self.store.client.mget(keys)
                return raw, latest_word(words)
            pipe = self.store.client.pipeline(transaction=False)
            pipe.mget(keys)
            if due:
                pipe.zadd(DEMAND_KEY, dict.fromkeys(due, _now_ms()), xx=True)
            if also is not None:
                also(pipe)
            raw, *words = pipe.execute()[0]
            return raw, latest_word(words)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def now(self, symbol: str, limit: int) -> Book | None:
        """The book, if it can be served at once to ``limit`` levels (the fast path); None for
        anything else, which the caller hands to ``books`` to wait or to say why not."""
        try:
            book = self.read(symbol, limit)
        except StoreUnavailable:
            return None
        return book if book is not None and book.deep_enough(limit) else None

    def books(self, symbols: list[str], limit: int, max_age_ms: int | None = None) -> list[Book]:
        """The current books of ``symbols``, each deep enough for ``limit`` levels, waiting up to
        ``wait_s`` for what is missing; a lookup.NoValue (counted by reason) if any is not there."""
        try:
            return self._books(symbols, limit, max_age_ms)
        except (lookup.Stale, lookup.Unavailable) as exc:
            metrics.DEPTH_UNAVAILABLE.labels(exc.reason).inc()
            raise

    def _books(self, symbols: list[str], limit: int, max_age_ms: int | None) -> list[Book]:
        deadline = time.monotonic() + self.wait_s
        try:
            first = self.store.snapshots(KIND, symbols, decode=served, also=self._wanted(symbols, limit))
        except StoreUnavailable:
            raise lookup.Unavailable("Data store unavailable; try again shortly.", "redis") from None
        try:
            books: list[Book] = lookup.fetch(self.store, KIND, symbols, self.wait_s, served, first)
        except (lookup.Stale, lookup.Unavailable) as exc:
            raise self._why(exc, symbols) from None
        shallow = [s for s, b in zip(symbols, books, strict=True) if not b.deep_enough(limit)]
        if shallow:
            came = self._deeper(shallow, limit, deadline)
            books = [came.get(s, b) for s, b in zip(symbols, books, strict=True)]
            for symbol in shallow:
                if symbol not in came:
                    gone = lookup.Stale(f"No current data for {symbol}: its stream is not live.")
                    raise self._why(gone, [symbol])
                if not came[symbol].deep_enough(limit):
                    raise Shallow(symbol, limit)
        return [with_age(b, s, max_age_ms) for s, b in zip(symbols, books, strict=True)]

    def _deeper(self, shallow: list[str], limit: int, deadline: float) -> dict[str, Book]:
        """Ask for the deeper tier at once (and wake the messenger); wait for it until ``deadline``."""
        wanted = dict.fromkeys((wanted_member(s, tier(limit)) for s in shallow), _now_ms())
        pipe = self.store.client.pipeline(transaction=False)
        pipe.zadd(WANTED_KEY, wanted, gt=True)
        publish(pipe, DEMAND_CHANNEL, "depth")
        try:
            pipe.execute()
            left_s = max(0.0, deadline - time.monotonic())
            found: dict[str, Book] = self.store.wait(
                KIND, shallow, left_s, served, lambda b: b.deep_enough(limit)
            )
        except (StoreUnavailable, redis.RedisError):
            raise lookup.Unavailable("Data store unavailable; try again shortly.", "redis") from None
        return found

    def _wanted(self, symbols: list[str], limit: int) -> Callable[[Any], None] | None:
        """Register the tier these requests need, at most once a second per symbol and tier."""
        level = tier(limit)
        due = [
            m
            for m in (wanted_member(s, level) for s in symbols)
            if self.store.due_members([_WANTED_TOUCH + m])
        ]
        if not due:
            return None
        scores = dict.fromkeys(due, _now_ms())
        return lambda pipe: pipe.zadd(WANTED_KEY, scores, gt=True)

    def want(self, symbol: str, limit: int) -> None:
        """Keep the tier of ``limit`` wanted for a follower (at most once a second)."""
        also = self._wanted([symbol], limit)
        if also is None:
            return
        pipe = self.store.client.pipeline(transaction=False)
        also(pipe)
        with contextlib.suppress(redis.RedisError):  # the next tick tries again
            pipe.execute()

    def _why(self, exc: lookup.NoValue, symbols: list[str]) -> lookup.NoValue:
        """The error, with the messenger's word on a book not in sync when it has one."""
        if exc.reason not in ("not_vouched", "subscribing"):
            return exc
        try:
            unsynced = self.unsynced(symbols)
        except redis.RedisError:
            return exc
        for symbol, reason in unsynced.items():
            return _reason(exc, reason, f"No current order book for {symbol}: {UNSYNCED_REASONS[reason]}.")
        return exc

    def status(self, symbols: list[str]) -> list[dict[str, Any]]:
        """What the status page shows of these books (one round trip, no demand counted): each
        one's update id, levels held and age, or why it cannot be served."""
        if not symbols:
            return []
        keys = [snapshot_key(KIND, s) for s in symbols]
        pipe = self.store.client.pipeline(transaction=False)
        self.store.stream_states.states(keys, pipe)
        pipe.hmget(UNSYNCED_KEY, symbols)
        collect = self._heads.queue(keys, pipe)
        states, words, *heads = pipe.execute()
        flat = collect(heads)
        now = _now_ms()
        rows = []
        for symbol, (head, heard), state, word in zip(symbols, pairs(flat), states, words, strict=True):
            row: dict[str, Any] = {"symbol": symbol, "fresh": head is not None and heard is not None}
            if row["fresh"]:
                fields = orjson.loads(head)
                row.update({k: fields.get(k) for k in ("update_id", "levels", "counts", "partial")})
                row["age_ms"] = max(0, now - int(heard))
            else:
                said = _text(word)
                row["reason"] = (
                    said
                    if said in UNSYNCED_REASONS
                    else "syncing"
                    if _text(state) == PENDING
                    else "not_vouched"
                )
            rows.append(row)
        return rows

    def unsynced(self, symbols: list[str]) -> dict[str, str]:
        """The messenger's word on books not in sync (for the status page)."""
        words = self.store.client.hmget(UNSYNCED_KEY, symbols) if symbols else []
        out = {}
        for symbol, word in zip(symbols, words, strict=True):
            reason = _text(word)
            if reason in UNSYNCED_REASONS:
                out[symbol] = reason
        return out


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _now_ms() -> int:
    return int(time.time() * 1000)
