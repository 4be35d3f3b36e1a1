"""Older trades fetched on the server's request (contract.backfill) into a series' backfilled set.

A request for ids asks that ``[reach, reach + PAGE - 1]`` be held: one call from the first id not
held (none if another request's call brought them, or if none of them exists: below the series'
origin), and the whole page is kept, up to the tail, since the next range asked for is often the
next page. A request for a time takes up to two calls (none if what is held already shows the
first trade at or after it): the PAGE aggregate trades from it, and, unless the one before the
first of them is held or there is none, the PAGE before it. The set keeps TRADE_HISTORY_MAX items:
past that, those farthest from what was just fetched go (a walk forward drops the oldest, a walk
back the newest).

Whenever the exchange answers ``fromId=X`` with a first id above ``X``, that id is the series'
origin (contract.trade_history: every id exists, so none below it does), kept with the items.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from contract.trade_history import (
    AGG_TRADE,
    BACKFILLED_TTL_MS,
    HELD_LUA,
    ORIGIN_TTL_MS,
    PAGE,
    TIME_PATTERN,
    backfilled_key,
    origin_key,
    tail_key,
)
from messenger.binance import Fields, Order
from messenger.rest import BinanceRest
from messenger.trade_items import FROM_ID_PATH, Item, fetch_page

logger = logging.getLogger(__name__)

# Add older items (KEYS: the set, its origin mark; ARGV: max, ttl_ms, origin or '', origin_ttl_ms,
# then id, member pairs in ascending id) to a backfilled set, each id once; past ``max`` items,
# evict from whichever end lies farther from what was added. The origin mark is set if given.
STORE_SCRIPT = """
local key, max, ttl = KEYS[1], tonumber(ARGV[1]), ARGV[2]
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
local n = (#ARGV - 4) / 2
if n < 1 then return 0 end
for i = 1, n do
  local x = ARGV[3 + 2 * i]
  if redis.call('ZCOUNT', key, x, x) == 0 then redis.call('ZADD', key, x, ARGV[4 + 2 * i]) end
end
local lo, hi = tonumber(ARGV[5]), tonumber(ARGV[3 + 2 * n])
local over = redis.call('ZCARD', key) - max
while over > 0 do
  local below = redis.call('ZCOUNT', key, '-inf', '(' .. lo)
  local above = redis.call('ZCOUNT', key, '(' .. hi, '+inf')
  local low = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
  local high = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
  local take
  if below > 0 and (above == 0 or lo - low >= high - hi) then
    take = math.min(over, below)
    redis.call('ZREMRANGEBYRANK', key, 0, take - 1)
  elseif above > 0 then
    take = math.min(over, above)
    redis.call('ZREMRANGEBYRANK', key, -take, -1)
  else
    take = over
    redis.call('ZREMRANGEBYRANK', key, 0, take - 1)
  end
  over = over - take
end
redis.call('PEXPIRE', key, ttl)
return n
"""

# What is known of a series before a fetch (KEYS: tail, backfilled set, origin mark; ARGV: the
# pattern of an item's time, a time or ''). Returns {its origin, whether the first id at or after
# the time is known from what is held (it is held, and so is the one before it, or it is the origin)}.
KNOWN_SCRIPT = (
    HELD_LUA
    + """
local origin = origin_of(KEYS[3])
local t = tonumber(ARGV[2])
if not t then return {origin, 0} end
local a = first_held_at(KEYS[1], KEYS[2], ARGV[1], t)
if a and (a <= origin or held_in(KEYS[1], KEYS[2], a - 1)) then return {origin, 1} end
return {origin, 0}
"""
)


class OlderTrades:
    """Fetches older ranges over REST and keeps them (the backfill worker's thread)."""

    def __init__(self, client: redis.Redis, rest: BinanceRest, history_max: int) -> None:
        self.client = client
        self.rest = rest
        self.history_max = history_max
        self._store = client.register_script(STORE_SCRIPT)
        self._known = client.register_script(KNOWN_SCRIPT)

    def fetch_ids(self, series: str, symbol: str, reach: int, lowest: int | None) -> None:
        """Hold ids from ``reach`` on, a page of them, below the tail's ``lowest`` (if any)."""
        end = reach + PAGE - 1 if lowest is None else min(reach + PAGE - 1, lowest - 1)
        reach = max(reach, self._known_of(series, symbol, None)[0])  # none exists below the origin
        rows: Any = self.client.zrangebyscore(backfilled_key(series, symbol), reach, end, withscores=True)
        held = {int(score) for _, score in rows}
        start = next((i for i in range(reach, end + 1) if i not in held), None)
        if start is None:
            return  # another request's fetch brought them, or none of them exists
        page = fetch_page(self.rest, series, FROM_ID_PATH[series], symbol, {"fromId": str(start)})
        items = [item for item, _, _ in page if lowest is None or item[0] < lowest]
        self.keep(series, symbol, items, _origin_of(page, start))

    def fetch_time(self, symbol: str, at_ms: int) -> None:
        """The PAGE aggregate trades from ``at_ms`` on, and the PAGE before the first of them."""
        origin, known = self._known_of(AGG_TRADE, symbol, at_ms)
        if known:
            return  # another request's fetch brought it
        after = self._page(symbol, {"startTime": str(at_ms)})
        items = [item for item, _, _ in after]
        first = after[0][0][0] if after else origin
        new_origin = None
        if first > origin and not self._held(AGG_TRADE, symbol, first - 1):
            from_id = max(origin, first - PAGE)
            before = self._page(symbol, {"fromId": str(from_id)})
            items = [item for item, _, _ in before if item[0] < first] + items
            new_origin = _origin_of(before, from_id)
        self.keep(AGG_TRADE, symbol, items, new_origin)

    def keep(self, series: str, symbol: str, items: list[Item], origin: int | None = None) -> None:
        """Add ``items`` (ascending ids) to the backfilled set, and mark the ``origin`` if known."""
        if not items and origin is None:
            return
        mark = "" if origin is None else origin
        args: list[Any] = [self.history_max, BACKFILLED_TTL_MS, mark, ORIGIN_TTL_MS]
        for item_id, body in items:
            args += [item_id, body]
        self._store(keys=[backfilled_key(series, symbol), origin_key(series, symbol)], args=args)
        if origin is not None:
            logger.info("trade history: %s %s begins at id %d", symbol, series, origin)
        if items:
            first, last = items[0][0], items[-1][0]
            logger.info("trade history: %s %s ids %d to %d fetched", symbol, series, first, last)

    def _page(self, symbol: str, params: dict[str, str]) -> list[tuple[Item, Order, Fields]]:
        """One call to /api/v3/aggTrades (by ``fromId`` or ``startTime``)."""
        return fetch_page(self.rest, AGG_TRADE, FROM_ID_PATH[AGG_TRADE], symbol, params)

    def _known_of(self, series: str, symbol: str, at_ms: int | None) -> tuple[int, bool]:
        keys = [tail_key(series, symbol), backfilled_key(series, symbol), origin_key(series, symbol)]
        origin, known = self._known(keys=keys, args=[TIME_PATTERN[series], "" if at_ms is None else at_ms])
        return int(origin), bool(known)

    def _held(self, series: str, symbol: str, item_id: int) -> bool:
        pipe = self.client.pipeline(transaction=False)
        for key in (tail_key(series, symbol), backfilled_key(series, symbol)):
            pipe.zcount(key, item_id, item_id)
        return any(pipe.execute())


def _origin_of(page: list[Any], from_id: int) -> int | None:
    """The series' first id, if an answer to ``fromId=from_id`` shows it: one that starts above it."""
    if page and page[0][0][0] > from_id:
        return int(page[0][0][0])
    return None
