"""Local order books, kept in sync from the diff depth stream the way Binance documents it.

For every symbol whose ``<symbol>@depth@100ms`` stream is carried (kind ``depth``, on demand or
pinned), the reader threads hand each event over (``event``). A book is synchronized thus
(shared/binance-protocol.md, "Local order book procedure"):

1. events are buffered from the first one on;
2. a REST snapshot (``GET /api/v3/depth``, DEPTH_SNAPSHOT_LIMIT levels) is fetched on this worker's
   thread, paced so that many books (after a reconnect, say) never spend more than
   SNAPSHOT_WEIGHT_PER_MINUTE of Binance's weight a minute;
3. a snapshot older than the first buffered event (``lastUpdateId`` < its ``U``) is fetched again;
4. buffered events the snapshot already holds (``u`` <= ``lastUpdateId``) are dropped, the rest
   applied in order: from then on every event must start right after the last (``U`` = ``u`` + 1)
   or overlap it; an event wholly before it (a second connection carrying the stream) is ignored.

A book is exact only as deep as its snapshot reached, and a moving market eats into that. When a
side held is shallower than what is written (the tier asked for, up to the snapshot depth), a
fresh snapshot is fetched, within the same budget, at most every REFRESH_MIN_S per book and after
any pending first sync: the events applied meanwhile are kept, the new book brought to the same
update id, and swapped in; the book in use is served all along (it is still exact, only shallower).

A gap (``U`` > last ``u`` + 1: an event lost) or a malformed level means the book is no longer
known to be right: its value is withdrawn at once (messenger.book.Book.withdraw: deleted from
Redis, never served) and the book starts over from step 1. Each synced state is handed to the
book as the symbol's ``depth`` record (contract.order_book), vouched for by the connection that
brought the last event, like any other value: it is served only while that connection is live.
The record holds the top levels the server needs: the tier asked for lately (the demand reader's
``book_levels``), at least the default's. While a book has no record, why is said in
contract.order_book.UNSYNCED_KEY (``syncing``, ``resyncing``, ``out_of_sync``) for the server's
errors, metrics and status page; the hash expires UNSYNCED_TTL_MS after this worker's last word.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from contract.order_book import DEFAULT_LIMIT, UNSYNCED_KEY, book_fields
from contract.ordering import book_order
from messenger.binance import Fields
from messenger.book import Book, Voucher
from messenger.local_book import BadLevel, LocalBook
from messenger.rest import BinanceRest, RateLimited, RestError
from messenger.worker import Worker

logger = logging.getLogger(__name__)

DEPTH_PATH = "/api/v3/depth"
# Snapshots spend at most this much of Binance's 6,000 weight a minute (a 1,000-level one weighs
# 50: 36 a minute), with bursts of up to SNAPSHOT_BURST_WEIGHT (10 of those at once).
SNAPSHOT_WEIGHT_PER_MINUTE = 1800
SNAPSHOT_BURST_WEIGHT = 500
# Events buffered while a snapshot is awaited; past this the oldest go (step 3 then refetches).
BUFFER_MAX = 1000
RETRY_S = 1.0
POLL_S = 0.1
# A book is refreshed (a fresh snapshot, the book in use served meanwhile) at most this often.
REFRESH_MIN_S = 30.0
UNSYNCED_TTL_MS = 10_000

# Where a book is: its stream not heard yet, awaiting its snapshot, fetching it, or in sync.
IDLE, WAITING, FETCHING, SYNCED = "idle", "waiting", "fetching", "synced"
STATES = (IDLE, WAITING, FETCHING, SYNCED)
RESYNC_REASONS = ("gap", "malformed")


def snapshot_weight(limit: int) -> int:
    """Binance's request weight of ``GET /api/v3/depth`` with ``limit`` levels."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@dataclass(slots=True, eq=False)
class Sync:
    """One symbol's book and where its synchronization stands."""

    symbol: str
    key: str
    state: str = IDLE
    local: LocalBook | None = None
    buffer: list[tuple[Voucher, Fields]] = field(default_factory=list)
    levels: int = DEFAULT_LIMIT  # the tier written
    fields: Fields | None = None  # the last record handed to the book
    conn: Voucher | None = None  # the connection that brought the last event applied
    not_before: float = 0.0  # a failed snapshot is tried again after this (monotonic)
    # A refresh: the events applied since its snapshot was asked for (None: none under way), and
    # the fresh book once it came, brought up to the book in use before it takes its place.
    since_refresh: list[tuple[Voucher, Fields]] | None = None
    fresh: LocalBook | None = None
    refreshed_at: float = float("-inf")


class OrderBooks(Worker):
    """Every followed symbol's local book."""

    def __init__(
        self,
        book: Book,
        rest: BinanceRest,
        snapshot_limit: int,
        levels: Callable[[], Mapping[str, int]] = dict,
        clock: Callable[[], float] = time.monotonic,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__("order-books")
        self.book = book
        self.rest = rest
        self.snapshot_limit = snapshot_limit
        self.weight = snapshot_weight(snapshot_limit)
        self.levels = levels
        self.clock = clock
        self.events = 0
        self.applied = 0
        self.duplicates = 0
        self.unfollowed = 0
        self.snapshots = 0
        self.snapshot_failures = 0
        self.refetches = 0  # snapshots older than the buffered events
        self.resyncs: Counter[str] = Counter()  # by reason: gap, malformed
        self._books: dict[str, Sync] = {}
        self._queue: dict[str, None] = {}  # symbols awaiting a snapshot, in order
        self._refresh: dict[str, None] = {}  # synced books due a fresh snapshot, after the above
        self.refreshes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._tokens = float(SNAPSHOT_BURST_WEIGHT)
        self._filled = clock()
        self.client = client
        self._words: dict[str, str | None] = {}  # SYMBOL -> why it has no record, to write (None: it has)
        self._said = False  # whether UNSYNCED_KEY may hold words of ours
        self._said_at = 0.0

    # -- what is carried (the messenger's planning thread) -------------------------------

    def follow(self, keys: Mapping[str, str]) -> None:
        """Keep books for these symbols (SYMBOL -> its depth key) and for no other."""
        with self._lock:
            for symbol in list(self._books):
                if symbol not in keys:
                    del self._books[symbol]
                    self._queue.pop(symbol, None)
                    self._words[symbol] = None
            for symbol, key in keys.items():
                if symbol not in self._books:
                    self._books[symbol] = Sync(symbol, key)
                    self._words[symbol] = "syncing"

    @property
    def followed(self) -> int:
        """Books kept."""
        return len(self._books)

    def states(self) -> Counter[str]:
        """How many books are in each state."""
        with self._lock:
            return Counter(s.state for s in self._books.values())

    # -- events (reader threads) --------------------------------------------------------

    def event(self, conn: Voucher, symbol: str, fields: Fields, now: float) -> None:
        """A diff event of ``symbol``'s book arrived on ``conn``."""
        with self._lock:
            sync = self._books.get(symbol)
            if sync is None:
                self.unfollowed += 1
                return
            self.events += 1
            local = sync.local
            if sync.state != SYNCED or local is None:
                self._buffer(sync, conn, fields)
                return
            if fields["update_id"] <= local.update_id:
                # Held already (another connection brought it): conn is subscribed to the same
                # sequence, so it may vouch for what is held (the book ignores the old order).
                self.duplicates += 1
                if sync.fields is not None:
                    self.book.on_frame(conn, sync.key, _order(sync.fields), sync.fields, now)
                return
            if fields["first_update_id"] > local.update_id + 1:
                self._lose(sync, "gap", now)
                self._buffer(sync, conn, fields)
                return
            try:
                local.apply(fields["bids"], fields["asks"], fields["update_id"])
            except BadLevel as exc:
                self._lose(sync, "malformed", now, str(exc))
                return
            self.applied += 1
            sync.conn = conn
            if sync.since_refresh is not None:
                self._follow_refresh(sync, sync.since_refresh, conn, fields)
            self._publish(sync, now)

    def _follow_refresh(
        self, sync: Sync, kept: list[tuple[Voucher, Fields]], conn: Voucher, fields: Fields
    ) -> None:
        """An event applied to the book in use: kept for the refresh, and brought to a fresh book."""
        fresh = sync.fresh
        if fresh is None:
            kept.append((conn, fields))
            if len(kept) > BUFFER_MAX:
                sync.since_refresh = None  # the snapshot is that late: give up, try again later
            return
        if fields["update_id"] > fresh.update_id:
            if fields["first_update_id"] > fresh.update_id + 1:
                sync.since_refresh = sync.fresh = None  # cannot be brought up: try again later
                return
            try:
                fresh.apply(fields["bids"], fields["asks"], fields["update_id"])
            except BadLevel:
                sync.since_refresh = sync.fresh = None
                return
        self._swap_if_level(sync)

    def _swap_if_level(self, sync: Sync) -> bool:
        """Put the fresh book in use once it is at the same update id as the one in use."""
        fresh, local = sync.fresh, sync.local
        if fresh is None or local is None or fresh.update_id != local.update_id:
            return False
        sync.local, sync.fresh, sync.since_refresh = fresh, None, None
        self.refreshes += 1
        return True

    def _buffer(self, sync: Sync, conn: Voucher, fields: Fields) -> None:
        sync.buffer.append((conn, fields))
        if len(sync.buffer) > BUFFER_MAX:
            del sync.buffer[: len(sync.buffer) - BUFFER_MAX]
        if sync.state == IDLE:
            self._again(sync, 0.0)
            self._wake.set()

    def _lose(self, sync: Sync, reason: str, now: float, detail: str = "") -> None:
        """The book is no longer known to be right: withdraw its value, start over."""
        self.resyncs[reason] += 1
        count = sum(self.resyncs.values())
        if count <= 20 or count % 100 == 0:
            logger.warning("order book %s: %s%s; resynchronizing (%d resyncs so far)",
                           sync.symbol, reason, f" ({detail})" if detail else "", count)  # fmt: skip
        self.book.withdraw(sync.key, now)
        sync.local, sync.fields, sync.conn, sync.state, sync.buffer = None, None, None, IDLE, []
        sync.since_refresh = sync.fresh = None
        self._refresh.pop(sync.symbol, None)
        self._words[sync.symbol] = "resyncing"
        self._wake.set()

    def _publish(self, sync: Sync, now: float) -> None:
        local, conn = sync.local, sync.conn
        if local is None or conn is None:
            return
        bids, asks, partial = local.top(sync.levels)
        sync.fields = book_fields(sync.symbol, local.update_id, sync.levels, local.limit, bids, asks, partial)
        self.book.on_frame(conn, sync.key, _order(sync.fields), sync.fields, now)
        if (
            sync.since_refresh is None
            and sync.symbol not in self._refresh
            and now - sync.refreshed_at >= REFRESH_MIN_S
            and local.shallower_than(min(sync.levels, self.snapshot_limit))
        ):
            self._refresh[sync.symbol] = None
            self._wake.set()

    # -- snapshots and tiers (this worker's thread) --------------------------------------

    def run(self) -> None:
        """Fetch snapshots as books need them, paced; follow the tiers asked for."""
        while not self._stopping.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            self._retier()
            self._say()
            while not self._stopping.is_set():
                symbol = self._next_due()
                if symbol is None:
                    break
                self._sync(symbol)

    def _retier(self) -> None:
        """Write deeper (or shallower) books where the tier asked for changed."""
        wanted = self.levels()
        now = self.clock()
        with self._lock:
            for symbol, sync in self._books.items():
                levels = max(DEFAULT_LIMIT, wanted.get(symbol, 0))
                if levels != sync.levels:
                    deeper = levels > sync.levels
                    sync.levels = levels
                    if deeper and sync.state == SYNCED:
                        self._publish(sync, now)  # at once: a request is waiting for it

    def _next_due(self) -> str | None:
        """The next symbol to fetch a snapshot for (now FETCHING), if the weight budget allows one."""
        now = self.clock()
        refill = (now - self._filled) * SNAPSHOT_WEIGHT_PER_MINUTE / 60
        self._tokens = min(float(SNAPSHOT_BURST_WEIGHT), self._tokens + refill)
        self._filled = now
        if self._tokens < self.weight:
            return None
        with self._lock:
            for symbol in list(self._queue):
                sync = self._books.get(symbol)
                if sync is None or sync.state != WAITING:
                    del self._queue[symbol]
                elif sync.not_before <= now:
                    del self._queue[symbol]
                    sync.state = FETCHING
                    self._tokens -= self.weight
                    return symbol
            for symbol in list(self._refresh):
                del self._refresh[symbol]
                sync = self._books.get(symbol)
                if sync is not None and sync.state == SYNCED and sync.since_refresh is None:
                    sync.since_refresh, sync.refreshed_at = [], now  # events from now on are kept
                    self._tokens -= self.weight
                    return symbol
        return None

    def _sync(self, symbol: str) -> None:
        """Fetch ``symbol``'s snapshot and bring its book in sync with the buffered events."""
        try:
            doc = self.rest.get(DEPTH_PATH, {"symbol": symbol, "limit": str(self.snapshot_limit)})
            failure = ""
        except RateLimited as exc:
            failure, delay = str(exc), exc.retry_after_s
        except RestError as exc:
            failure, delay = str(exc), RETRY_S
        now = self.clock()
        with self._lock:
            sync = self._books.get(symbol)
            if sync is not None and sync.state == SYNCED and sync.since_refresh is not None:
                self._refreshed(sync, None if failure else doc, now)
                return
            if sync is None or sync.state != FETCHING:
                return
            if failure:
                self._words[symbol] = "out_of_sync"
                self.snapshot_failures += 1
                logger.warning("order book %s: snapshot failed (%s); trying again", symbol, failure)
                self._again(sync, now + delay)
                return
            self.snapshots += 1
            try:
                local = LocalBook(doc, self.snapshot_limit)
            except BadLevel as exc:
                self.snapshot_failures += 1
                logger.warning("order book %s: the snapshot is malformed (%s); trying again", symbol, exc)
                self._again(sync, now + RETRY_S)
                return
            if not sync.buffer or local.update_id < sync.buffer[0][1]["first_update_id"]:
                self.refetches += 1  # older than the first buffered event: step 3
                self._again(sync, now)
                return
            try:
                for conn, fields in sync.buffer:
                    if fields["update_id"] <= local.update_id:
                        continue
                    if fields["first_update_id"] > local.update_id + 1:
                        self._lose(sync, "gap", now)
                        return
                    local.apply(fields["bids"], fields["asks"], fields["update_id"])
                    sync.conn = conn
                    self.applied += 1
            except BadLevel as exc:
                self._lose(sync, "malformed", now, str(exc))
                return
            if sync.conn is None:
                sync.conn = sync.buffer[-1][0]
            sync.local, sync.state, sync.buffer = local, SYNCED, []
            self._words[symbol] = None
            self._publish(sync, now)

    def _refreshed(self, sync: Sync, doc: Any, now: float) -> None:
        """A refresh's snapshot came (None: it failed): bring it up to the book in use, or give up."""
        events, sync.since_refresh = sync.since_refresh or [], None
        if doc is None:
            return
        try:
            fresh = LocalBook(doc, self.snapshot_limit)
            if events and fresh.update_id < events[0][1]["first_update_id"]:
                return  # older than what was kept since: the next refresh tries again
            for _, fields in events:
                if fields["update_id"] <= fresh.update_id:
                    continue
                if fields["first_update_id"] > fresh.update_id + 1:
                    return
                fresh.apply(fields["bids"], fields["asks"], fields["update_id"])
        except BadLevel:
            return
        local = sync.local
        if local is None or fresh.update_id < local.update_id:
            return  # (not when the events kept reach the book in use)
        sync.fresh, sync.since_refresh = fresh, []
        if self._swap_if_level(sync):
            self._publish(sync, now)  # deeper at once

    def _say(self, stopping: bool = False) -> None:
        """Write why books have no record (UNSYNCED_KEY); renew its expiry now and then."""
        if self.client is None:
            return
        now = self.clock()
        with self._lock:
            words, self._words = self._words, {}
            if stopping:
                words = dict.fromkeys(self._books)
        if not words and (not self._said or now - self._said_at < UNSYNCED_TTL_MS / 3000):
            return
        said = {symbol: word for symbol, word in words.items() if word is not None}
        gone = [symbol for symbol, word in words.items() if word is None]
        try:
            pipe = self.client.pipeline(transaction=False)
            if gone:
                pipe.hdel(UNSYNCED_KEY, *gone)
            if said:
                pipe.hset(UNSYNCED_KEY, items=[x for pair in said.items() for x in pair])
            pipe.pexpire(UNSYNCED_KEY, UNSYNCED_TTL_MS)
            pipe.execute()
        except redis.RedisError:
            with self._lock:  # said again next time, unless a newer word came meanwhile
                self._words = {**words, **self._words}
            return
        self._said, self._said_at = bool(said) or self._said, now

    def _again(self, sync: Sync, not_before: float) -> None:
        """Fetch (again) once ``not_before`` has passed, in turn."""
        sync.state, sync.not_before = WAITING, not_before
        self._queue[sync.symbol] = None

    def stop(self) -> None:
        """Stop after the snapshot in flight, if any; take back what was said of our books."""
        super().stop()
        self._wake.set()
        self._thread.join(1.0)
        self._say(stopping=True)

    def status(self) -> dict[str, Any]:
        """Books by state and resyncs so far, for the heartbeat and the status page."""
        states = self.states()
        return {
            "books": sum(states.values()),
            "books_synced": states.get(SYNCED, 0),
            "books_syncing": states.get(WAITING, 0) + states.get(FETCHING, 0) + states.get(IDLE, 0),
            "book_resyncs": sum(self.resyncs.values()),
        }


def _order(fields: Fields) -> tuple[int, int, int]:
    """The order of a book's record (contract.ordering.book_order): a refreshed book at the same
    update id is newer if it holds more levels."""
    bids, asks = fields["counts"]
    return book_order(fields["update_id"], fields["levels"], bids + asks)
