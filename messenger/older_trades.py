"""Older trades fetched on the server's request (contract.backfill) into a series' backfilled set.

A request for ids asks that ``[reach, reach + PAGE - 1]`` be held: one call from the first id not
held (none if another request's call brought them), and the whole page is kept, up to the tail,
since the next range asked for is often the next page. A request for a time takes two calls: the
PAGE aggregate trades from it, and the PAGE before the first of them, so that the first trade at or
after it is known from what is held. The set keeps TRADE_HISTORY_MAX items: past that, those
farthest from what was just fetched go (a walk forward drops the oldest, a walk back the newest).
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from contract.trade_history import AGG_TRADE, BACKFILLED_TTL_MS, PAGE, backfilled_key
from messenger.rest import BinanceRest
from messenger.trade_items import FROM_ID_PATH, RECENT_PATH, Item, fetch_page

logger = logging.getLogger(__name__)

# Add older items (ARGV: max, ttl_ms, then id, member pairs in ascending id) to a backfilled set,
# each id once; past ``max`` items, evict from whichever end lies farther from what was added.
STORE_SCRIPT = """
local key, max, ttl = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local n = (#ARGV - 2) / 2
if n < 1 then return 0 end
for i = 1, n do
  local x = ARGV[1 + 2 * i]
  if redis.call('ZCOUNT', key, x, x) == 0 then redis.call('ZADD', key, x, ARGV[2 + 2 * i]) end
end
local lo, hi = tonumber(ARGV[3]), tonumber(ARGV[1 + 2 * n])
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


class OlderTrades:
    """Fetches older ranges over REST and keeps them (the backfill worker's thread)."""

    def __init__(self, client: redis.Redis, rest: BinanceRest, history_max: int) -> None:
        self.client = client
        self.rest = rest
        self.history_max = history_max
        self._store = client.register_script(STORE_SCRIPT)

    def fetch_ids(self, series: str, symbol: str, reach: int, lowest: int | None) -> None:
        """Hold ids from ``reach`` on, a page of them, below the tail's ``lowest`` (if any)."""
        end = reach + PAGE - 1 if lowest is None else min(reach + PAGE - 1, lowest - 1)
        rows: Any = self.client.zrangebyscore(backfilled_key(series, symbol), reach, end, withscores=True)
        held = {int(score) for _, score in rows}
        start = next((i for i in range(reach, end + 1) if i not in held), None)
        if start is None:
            return  # another request's fetch brought them
        page = fetch_page(self.rest, series, FROM_ID_PATH[series], symbol, {"fromId": str(start)})
        self._keep(series, symbol, [item for item, _, _ in page if lowest is None or item[0] < lowest])

    def fetch_time(self, symbol: str, at_ms: int) -> None:
        """The PAGE aggregate trades from ``at_ms`` on, and the PAGE before the first of them."""
        after = fetch_page(self.rest, AGG_TRADE, RECENT_PATH[AGG_TRADE], symbol, {"startTime": str(at_ms)})
        items = [item for item, _, _ in after]
        if after and after[0][0][0] > 0:
            first = after[0][0][0]
            params = {"fromId": str(max(0, first - PAGE))}
            before = fetch_page(self.rest, AGG_TRADE, FROM_ID_PATH[AGG_TRADE], symbol, params)
            items = [item for item, _, _ in before if item[0] < first] + items
        self._keep(AGG_TRADE, symbol, items)

    def _keep(self, series: str, symbol: str, items: list[Item]) -> None:
        if not items:
            return
        args: list[Any] = [self.history_max, BACKFILLED_TTL_MS]
        for item_id, body in items:
            args += [item_id, body]
        self._store(keys=[backfilled_key(series, symbol)], args=args)
        logger.info("trade history: %s %s ids %d to %d fetched", symbol, series, items[0][0], items[-1][0])
