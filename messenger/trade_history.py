"""Keeps the trade lists of the trade and aggregate-trade streams in Redis (contract.trade_history).

Every accepted frame of a ``<symbol>@trade`` or ``<symbol>@aggTrade`` stream is handed here by the
book and appended to its series' tail by this worker's thread, in batches. The append is one Redis
script that takes only items that join the tail without a hole, whatever else writes it meanwhile;
what does not join (a gap in ids, after a reconnect or any lost frame) waits here and a catch-up is
asked for: the missing items are fetched over REST from the last one held (``fromId``), one call of
up to 1,000; only when more than that was missed is the tail started again from the exchange's last
1,000, since the tail keeps no more than that anyway. The seeder catches up the same way when a
stream is (re)subscribed, so a reconnect costs weight in proportion to what was missed, never the
whole list again. A tail the stream started on its own (a first frame before the seed, or Redis
emptied) is filled once with the exchange's last 1,000. When the exchange has fewer than that, the
first of them is the series' origin (contract.trade_history): the tail then holds all there is.

Older ranges are fetched on the server's request (messenger.backfill calls ``backfill``), by
messenger.older_trades.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from contract.backfill import BACKFILL_CHANNEL, BACKFILL_KEY, Backfill
from contract.keys import RECORD_TTL_MS
from contract.redis_client import publish, queue_script
from contract.trade_history import (
    AGG_TRADE_BY_TIME,
    PAGE,
    TAIL_KEPT,
    origin_key,
    parse_tail_key,
    tail_key,
)
from messenger.backoff import Backoff
from messenger.binance import Fields, Order
from messenger.older_trades import OlderTrades
from messenger.rest import BinanceRest
from messenger.trade_items import FROM_ID_PATH, ID_FIELD, RECENT_PATH, Item, fetch_page, member
from messenger.worker import Worker

logger = logging.getLogger(__name__)

# Quiet tails of carried streams are renewed this often (their TTL is RECORD_TTL_MS).
RENEW_S = RECORD_TTL_MS / 3000
WAKE_S = 1.0

# Append a batch (ARGV: mode, kept, ttl_ms, then id, member pairs in ascending id) to a tail that
# has no hole, so that it still has none: only the batch's first run of consecutive ids is taken,
# and only if it overlaps the tail or touches either end. mode "reset": a run wholly newer than
# the tail replaces it. Returns {the tail's newest id or -1, how many of the batch were taken,
# how many items the tail holds, its oldest id or -1}.
APPEND_SCRIPT = """
local key, mode, kept, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n = (#ARGV - 3) / 2
if n < 1 then return {-1, 0, 0, -1} end
local function id(i) return tonumber(ARGV[2 + 2 * i]) end
local lo, hi
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if first[2] then
  lo = tonumber(first[2])
  hi = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
end
local run = 1
while run < n and id(run + 1) == id(run) + 1 do run = run + 1 end
if lo and (id(1) > hi + 1 or id(run) < lo - 1) then
  if mode == 'reset' and id(1) > hi then
    redis.call('DEL', key)
    lo = nil
  else
    return {hi, 0, redis.call('ZCARD', key), lo}
  end
end
for i = 1, run do
  local x = id(i)
  if not lo or x < lo or x > hi then redis.call('ZADD', key, x, ARGV[3 + 2 * i]) end
end
redis.call('ZREMRANGEBYRANK', key, 0, -(kept + 1))
redis.call('PEXPIRE', key, ttl)
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local bottom = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {tonumber(top[2]), run, redis.call('ZCARD', key), tonumber(bottom[2])}
"""


class TradeHistory(Worker):
    """Appends streamed items to tails, catches tails up over REST, and fetches older ranges."""

    def __init__(
        self,
        client: redis.Redis,
        rest: BinanceRest,
        history_max: int,
        carried: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        super().__init__("trade-history")
        self.client = client
        self.rest = rest
        self.carried = carried  # the tail keys of the streams carried now, for their TTL
        self.appended = 0
        self.gaps = 0
        self.errors = 0
        self.older = OlderTrades(client, rest, history_max)
        self._append = client.register_script(APPEND_SCRIPT)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[str, dict[int, bytes]] = {}  # tail key -> streamed items not appended yet
        self._top: dict[str, int] = {}  # tail key -> its newest id, as last seen
        self._series_locks: dict[str, threading.Lock] = {}
        self._short: set[str] = set()  # tails started from the stream, asked to be filled
        self._backoff = Backoff(0.05, 2.0)

    # -- streamed items (reader threads) ----------------------------------------------

    def add(self, key: str, fields: Fields) -> None:
        """An accepted frame of a stream that keeps its items under tail ``key``."""
        parsed = parse_tail_key(key)
        if parsed is None:
            return
        series = parsed[0]
        item_id = fields[ID_FIELD[series]]
        with self._lock:
            pending = self._pending.setdefault(key, {})
            pending[item_id] = member(series, fields)
            if len(pending) > TAIL_KEPT:  # a gap not caught up yet: only the newest can still matter
                for old in sorted(pending)[: len(pending) - TAIL_KEPT]:
                    del pending[old]
        if not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        """Stop after the batch in flight."""
        super().stop()
        self._wake.set()

    def run(self) -> None:
        """Append what streamed, at once; renew the tails of carried streams now and then."""
        next_renew = time.monotonic() + RENEW_S
        while not self._stopping.is_set():
            self._wake.wait(WAKE_S)
            self._wake.clear()
            try:
                self._flush()
                if time.monotonic() >= next_renew:
                    self._renew()
                    next_renew = time.monotonic() + RENEW_S
                self._backoff.reset()
            except redis.RedisError as exc:
                self.errors += 1
                logger.warning("trade history: Redis failed (%s); retrying", exc)
                self._stopping.wait(self._backoff.next_delay())

    def _flush(self) -> None:
        with self._lock:
            batch = {k: sorted(v.items()) for k, v in self._pending.items() if v}
        if not batch:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, items in batch.items():
            queue_script(pipe, self._append, [key], _append_args("extend", items))
        replies = pipe.execute()
        gaps: list[str] = []
        with self._lock:
            for key, (newest, taken, count, oldest) in zip(batch, replies, strict=True):
                self.appended += int(taken)
                pending = self._pending.get(key, {})
                top = int(newest)
                if top >= 0:
                    self._top[key] = top
                    for item_id in [i for i in pending if i <= top]:
                        del pending[item_id]
                # A tail the stream started (a first frame before the seed, Redis emptied) is
                # filled with the last 1,000 once; the server waits for that rather than ask.
                short = int(count) < TAIL_KEPT and int(oldest) > 0
                gap = bool(pending) and (top < 0 or min(pending) > top + 1)
                if gap or (short and key not in self._short):
                    gaps.append(key)
                if short:
                    self._short.add(key)
                else:
                    self._short.discard(key)
                if not pending:
                    self._pending.pop(key, None)
        if gaps:
            self._ask_catch_up(gaps)

    def _ask_catch_up(self, keys: list[str]) -> None:
        """Ask (messenger.backfill) for what the tails miss, from the id after their newest."""
        now_ms = int(time.time() * 1000)
        members: dict[str, int] = {}
        for key in keys:
            parsed = parse_tail_key(key)
            if parsed is None:
                continue
            top = self._top.get(key)
            with self._lock:
                first = min(self._pending.get(key) or [0])
            reach = top + 1 if top is not None else first
            members[Backfill(parsed[0], parsed[1], reach).member()] = now_ms
        self.gaps += len(members)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(BACKFILL_KEY, members, nx=True)
        publish(pipe, BACKFILL_CHANNEL, "tail")
        pipe.execute()

    def _renew(self) -> None:
        keys = list(self.carried())
        if keys:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.pexpire(key, RECORD_TTL_MS)
            pipe.execute()

    # -- catching a tail up (the seeder's or the backfill worker's thread) ------------

    def catch_up(self, series: str, symbol: str, seed: bool = False) -> tuple[Order, Fields] | None:
        """Fetch what the tail misses up to the exchange's newest item, and append it.

        Returns the newest item (for the stream's record) when it is known to be the newest.
        Unless ``seed``, nothing is fetched when the tail already joins what streamed since.
        Raises RestError (try again later); Redis failing drops the fetched items (what streams
        next finds the gap again).
        """
        key = tail_key(series, symbol)
        with self._series_lock(key):
            top, short = self._tail_state(series, symbol)
            with self._lock:
                pending = self._pending.get(key) or {}
                joined = top is not None and (not pending or min(pending) <= top + 1)
            if joined and not short and not seed:
                return None
            if top is not None and not short:
                page = fetch_page(self.rest, series, FROM_ID_PATH[series], symbol, {"fromId": str(top)})
                self._append_rest(key, "extend", page)
                if len(page) < PAGE:  # it reaches the newest trade
                    return (page[-1][1], page[-1][2]) if page else None
            page = fetch_page(self.rest, series, RECENT_PATH[series], symbol, {})
            self._append_rest(key, "reset", page)
            if 0 < len(page) < PAGE:  # fewer than asked for: the exchange has none before them
                self._mark_origin(series, symbol, page[0][0][0])
            return (page[-1][1], page[-1][2]) if page else None

    def _mark_origin(self, series: str, symbol: str, first: int) -> None:
        try:
            self.older.keep(series, symbol, [], first)
        except redis.RedisError as exc:
            logger.warning("trade history: %s %s origin not kept (Redis: %s)", symbol, series, exc)

    def _append_rest(self, key: str, mode: str, page: list[tuple[Item, Order, Fields]]) -> None:
        if not page:
            return
        try:
            args = _append_args(mode, [item for item, _, _ in page])
            top, taken, _, _ = self._append(keys=[key], args=args)
        except redis.RedisError as exc:
            logger.warning("trade history: %s not caught up (Redis: %s)", key, exc)
            return
        with self._lock:
            self.appended += int(taken)
            if int(top) >= 0:
                self._top[key] = int(top)
        self._wake.set()  # what streamed meanwhile may join now

    def _tail_state(self, series: str, symbol: str) -> tuple[int | None, bool]:
        """The tail's newest id (None: no tail), and whether it holds fewer than it keeps though
        older items exist (it does not reach back to the series' origin)."""
        key = tail_key(series, symbol)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zrange(key, -1, -1, withscores=True)
            pipe.zcard(key)
            pipe.get(origin_key(series, symbol))
            oldest, newest, count, origin = pipe.execute()
        except redis.RedisError:
            return None, True
        if not newest:
            return None, True
        return int(newest[0][1]), count < TAIL_KEPT and int(oldest[0][1]) > int(origin or 0)

    def _series_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._series_locks.setdefault(key, threading.Lock())

    # -- older ranges (the backfill worker's thread) -----------------------------------

    def backfill(self, request: Backfill) -> None:
        """Hold what ``request`` asks for (contract.trade_history); raises RestError to retry."""
        if request.series == AGG_TRADE_BY_TIME:
            self.older.fetch_time(request.symbol, request.reach)
            return
        tail = self.client.zrange(tail_key(request.series, request.symbol), 0, 0, withscores=True)
        lowest = int(tail[0][1]) if tail else None
        if lowest is not None and request.reach >= lowest:
            self.catch_up(request.series, request.symbol)  # after the tail: the messenger's own request
            return
        self.older.fetch_ids(request.series, request.symbol, request.reach, lowest)


def _append_args(mode: str, items: list[Item]) -> list[Any]:
    args: list[Any] = [mode, TAIL_KEPT, RECORD_TTL_MS]
    for item_id, body in items:
        args += [item_id, body]
    return args
