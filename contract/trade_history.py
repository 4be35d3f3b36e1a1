"""Kept trade lists: how a symbol's recent and older trades (and aggregate trades) sit in Redis.

Each series (``aggtrade``, ``trade``: the kind's key segment) of each symbol has two sorted sets,
scored by the item's id (Binance's aggregate trade id ``a``, or trade id), each member one item
exactly as Binance's REST API answers it (``{"a":26129,"p":"0.01633102",...,"M":true}`` for
``/api/v3/aggTrades``, ``{"id":28457,"price":...,"isBestMatch":true}`` for
``/api/v3/historicalTrades``), so an answer is its members joined, never re-encoded:

| key | type | what |
|---|---|---|
| ``transmute:history:<series>:<symbol>:{b}`` | sorted set, TTL | the last TAIL_KEPT items, no hole |
| ``transmute:backfilled:<series>:<symbol>:{b}`` | sorted set, TTL | older ranges fetched on request |
| ``transmute:backfilled:<series>:<symbol>:{b}:origin`` | string, TTL | the series' first id |

All are written by the messenger only; the backfilled set holds up to TRADE_HISTORY_MAX items.

The origin is what the exchange said about its first item: answering ``fromId=X`` with a first id
``Y > X`` (every id exists, so ids below ``Y`` do not), or the most recent with fewer than asked
for. A range reaching below it is whole from it on (Binance answers ``fromId=0`` with its first
items, ``endTime`` before the first trade with ``[]``), and a backfill below it asks for nothing.
Without the mark, the origin is 0 (Binance's first ids).

Ids of one symbol's series are consecutive integers on the exchange (every id exists), so a range
of ids ``[a, b]`` is held whole exactly when ``b - a + 1`` distinct ids of it are held: a reader
checks that, and never takes a range with a hole for a whole one. The tail is also kept without a
hole where it is written (messenger/trade_history.py: one Redis script appends only what joins
it). Ids grow with time (``T``), so ranges by time are found by bisecting ids.

Recent items are servable only while the stream's record (``transmute:aggtrade:<symbol>:{b}``) is
vouched for and the tail has caught up with it; a range that ends before the newest held item,
every id of it held, is history and is served whatever the connection's state.

Backfill requests (contract.backfill) for these series: ``aggtrade`` or ``trade`` with an id as
reach asks that ids ``[reach, reach + PAGE - 1]`` be held (one REST call of up to PAGE items);
``aggtrade_time`` with a time (epoch ms) as reach asks that the first item at or after it be known
from what is held: the PAGE aggregate trades from that time on, and the PAGE before them unless the
one before is held or below the origin (two calls at most, none if what is held already shows it).
Neither costs a call for what is held already or lies below the origin.
"""

from __future__ import annotations

from contract.keys import symbol_tag

AGG_TRADE = "aggtrade"
TRADE = "trade"
SERIES = (AGG_TRADE, TRADE)
# Backfill series whose reach is a time (epoch ms) rather than an id.
AGG_TRADE_BY_TIME = "aggtrade_time"
BACKFILL_SERIES = (AGG_TRADE, TRADE, AGG_TRADE_BY_TIME)

TAIL_KEY_PREFIX = "transmute:history:"
BACKFILLED_KEY_PREFIX = "transmute:backfilled:"
ORIGIN_SUFFIX = ":origin"
# The tail holds this many items (Binance's most recent trades go up to 1,000 a request).
TAIL_KEPT = 1000
# Items per REST call (Binance's maximum limit), and so per backfill request.
PAGE = 1000
# Backfilled ranges outlive their last write by this much: they are history, never stale, but a
# symbol nobody asks about lets its memory go.
BACKFILLED_TTL_MS = 3_600_000
# A series' first id never changes: kept a week after it was last learnt (one small key a series).
ORIGIN_TTL_MS = 7 * 24 * 3_600_000

# Where each series' item keeps its time, for a Lua pattern over a member.
TIME_PATTERN = {AGG_TRADE: '"T":(%d+)', TRADE: '"time":(%d+)'}
# The latest id in the stream's record (contract.records), for a Lua pattern over the record.
RECORD_ID_PATTERN = {AGG_TRADE: '"agg_trade_id":(%d+)', TRADE: '"trade_id":(%d+)'}


def tail_key(series: str, symbol: str) -> str:
    """Key of a series' recent items, in its symbol's slot: ``transmute:history:aggtrade:btcusdt:{7}``."""
    return f"{TAIL_KEY_PREFIX}{series}:{symbol.lower()}:{symbol_tag(symbol)}"


def backfilled_key(series: str, symbol: str) -> str:
    """Key of a series' older items fetched on request."""
    return f"{BACKFILLED_KEY_PREFIX}{series}:{symbol.lower()}:{symbol_tag(symbol)}"


def origin_key(series: str, symbol: str) -> str:
    """Key of a series' first id on the exchange, once known (no id below it exists)."""
    return backfilled_key(series, symbol) + ORIGIN_SUFFIX


def parse_tail_key(key: str) -> tuple[str, str] | None:
    """(series, SYMBOL) of a tail key, or None if it is not one."""
    prefix, _, rest = key.partition(TAIL_KEY_PREFIX)
    series, _, symbol = rest.partition(":")
    symbol = symbol.rpartition(":")[0]
    if prefix or series not in SERIES or not symbol:
        return None
    return series, symbol.upper()


# What one series holds, in Lua, for the scripts that read it (server.trade_history) and the one
# that decides whether a backfill is needed (messenger.older_trades). ``tpat``: TIME_PATTERN.
HELD_LUA = """
local function origin_of(key)
  local o = redis.call('GET', key)
  if o then return tonumber(o) end
  return 0
end
local function time_in(item, tpat) return tonumber(string.match(item, tpat)) end
-- The lowest id of a set with a time at or after t, or nil (ids grow with time: bisect by rank).
local function first_from(key, tpat, t)
  local lo, n = 0, redis.call('ZCARD', key)
  local hi = n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if time_in(redis.call('ZRANGE', key, mid, mid)[1], tpat) >= t then hi = mid else lo = mid + 1 end
  end
  if lo < n then return tonumber(redis.call('ZRANGE', key, lo, lo, 'WITHSCORES')[2]) end
end
-- The lowest id held in either set with a time at or after t, or nil.
local function first_held_at(tail, older, tpat, t)
  local x, y = first_from(tail, tpat, t), first_from(older, tpat, t)
  if x and y then return math.min(x, y) end
  return x or y
end
local function held_in(tail, older, x)
  return redis.call('ZCOUNT', tail, x, x) + redis.call('ZCOUNT', older, x, x) > 0
end
"""
