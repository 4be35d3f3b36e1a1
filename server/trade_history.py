"""Reading kept trade lists (contract.trade_history): a range, or what must happen before it can be.

One Redis script per read (one round trip) takes the stream's record and its vouchers, the tail,
the backfilled set and the origin mark of one series, and answers one of:

- ``ok`` and the items, in Binance's REST shape, oldest first: every id of the range is held;
- ``stale``: the range reaches the newest trade and the stream is not vouched for (or not
  streamed at all), so whether newer trades exist is not known;
- ``wait``: the stream is vouched for but the tail has not caught up with it yet;
- ``fetch``: a hole: the messenger must fetch ids from ``reach`` (``id``), or the aggregate
  trades around a time (``time``), before the range can be answered.

Ids below the series' origin do not exist: a range reaching below it is answered from it on, and
one that ends before it is ``[]``, as Binance answers them.

A range that ends before the newest held item, every id of it held, is history: it is answered
whatever the connection's state. Only an answer that must include the newest trade (most recent,
or a range running up to now) needs the stream vouched for, and the tail caught up with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from contract import backfill
from contract.backfill import Backfill
from contract.keys import snapshot_key
from contract.servable import VOUCHED_LUA
from contract.trade_history import (
    AGG_TRADE,
    AGG_TRADE_BY_TIME,
    HELD_LUA,
    RECORD_ID_PATTERN,
    TAIL_KEPT,
    TIME_PATTERN,
    backfilled_key,
    origin_key,
    tail_key,
)
from server.store import StoreUnavailable

RECENT, FROM_ID, BY_TIME = "recent", "from", "time"
OK, STALE, WAIT, FETCH = "ok", "stale", "wait", "fetch"

# KEYS: record, tail, backfilled, origin. ARGV: mode, limit, fromId or startTime (or ''), endTime (or ''),
# Lua pattern of an item's time, Lua pattern of the record's newest id, the items a tail keeps.
READ_SCRIPT = (
    HELD_LUA
    + VOUCHED_LUA
    + """
local tail, older = KEYS[2], KEYS[3]
local mode, limit = ARGV[1], tonumber(ARGV[2])
local tpat = ARGV[5]
local vouched, latest = false, nil
local record = redis.call('GET', KEYS[1])
if record then
  if heard_of(record) then
    vouched = true
    latest = tonumber(string.match(record, ARGV[6]))
  end
end
local function edge(key, rank)
  local r = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
  if r[2] then return tonumber(r[2]) end
end
local tail_lo, tail_hi, old_hi = edge(tail, 0), edge(tail, -1), edge(older, -1)
local kept = tonumber(ARGV[7])
-- No id below it exists: a range reaching below it is whole from it on.
local origin = origin_of(KEYS[4])
local top = tail_hi
if old_hi and (not top or old_hi > top) then top = old_hi end
-- Nothing newer than the tail exists: its stream vouches, and the tail has all it brought.
local caught_up = vouched and tail_hi ~= nil and latest ~= nil and tail_hi >= latest
local function present()
  if vouched then return {'wait'} end
  return {'stale'}
end
-- A tail the stream started (before its seed, or after Redis lost it) is being filled by the
-- messenger with the last ones it keeps: what it will hold is waited for, not asked for.
local function filling(x)
  return vouched and tail_lo and x < tail_lo and x > tail_hi - kept
    and redis.call('ZCARD', tail) < kept
end
-- Id x is not held: a hole to fetch, the end of the answer (nil), or the present unknown.
local function missing(x)
  if filling(x) then return {'wait'} end
  if top and x <= top then return {'fetch', 'id', x} end
  if caught_up then return nil end
  return present()
end
-- The items with ids in [a, b] held in either set, each once, in order.
local function collect(a, b)
  local t = redis.call('ZRANGEBYSCORE', tail, a, b, 'WITHSCORES')
  local o = redis.call('ZRANGEBYSCORE', older, a, b, 'WITHSCORES')
  local ids, items, i, j = {}, {}, 1, 1
  while i <= #t or j <= #o do
    local ti, oj = tonumber(t[i + 1]), tonumber(o[j + 1])
    if ti and (not oj or ti <= oj) then
      ids[#ids + 1], items[#items + 1] = ti, t[i]
      if oj == ti then j = j + 2 end
      i = i + 2
    else
      ids[#ids + 1], items[#items + 1] = oj, o[j]
      j = j + 2
    end
  end
  return ids, items
end
local function time_of(item) return time_in(item, tpat) end
-- Up to limit items from id a on, none after time stop (if given), without a hole.
local function walk_up(a, stop)
  local ids, items = collect(a, a + limit - 1)
  local out, expect = {'ok'}, a
  for k = 1, #ids do
    if ids[k] ~= expect then break end
    if stop and time_of(items[k]) > stop then return out end
    out[#out + 1] = items[k]
    expect = expect + 1
  end
  if #out > limit then return out end
  return missing(expect) or out
end
local function first_at(t) return first_held_at(tail, older, tpat, t) end
local function held(x) return held_in(tail, older, x) end

if mode == 'recent' then
  if not caught_up then return present() end
  return walk_up(math.max(origin, tail_hi - limit + 1), nil)
end
if mode == 'from' then
  return walk_up(math.max(origin, tonumber(ARGV[3])), nil)
end
local start, stop = tonumber(ARGV[3]), tonumber(ARGV[4])
if start then
  local a = first_at(start)
  if not a then
    if caught_up then return {'ok'} end
    return present()
  end
  if a > origin and not held(a - 1) then
    if filling(a - 1) then return {'wait'} end
    return {'fetch', 'time', start}
  end
  return walk_up(a, stop)
end
-- Only an end: the last items at or before it.
local c, b = first_at(stop + 1), nil
if c then
  if c > origin and not held(c - 1) then
    if filling(c - 1) then return {'wait'} end
    return {'fetch', 'time', stop + 1}
  end
  b = c - 1
else
  if not caught_up then return present() end
  b = tail_hi
end
if b < origin then return {'ok'} end
local a = math.max(origin, b - limit + 1)
local ids, items = collect(a, b)
if #ids < b - a + 1 then return missing(a) or {'fetch', 'id', a} end
local out = {'ok'}
for k = 1, #items do out[k + 1] = items[k] end
return out
"""
)


@dataclass(frozen=True, slots=True)
class Query:
    """A range of one series: the most recent ``limit``, ``limit`` from an id, or by time."""

    mode: str
    limit: int
    from_id: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the script said: ``ok`` and the items, or why not (``stale``, ``wait``, ``fetch``)."""

    status: str
    items: list[bytes]
    fetch: Backfill | None = None


class TradeHistoryStore:
    """Reads ranges of kept trade lists, and asks the messenger for what is missing."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script = client.register_script(READ_SCRIPT)

    def read(self, series: str, symbol: str, query: Query) -> Answer:
        """One read, one round trip; raises StoreUnavailable without Redis."""
        first = query.from_id if query.mode == FROM_ID else query.start_ms
        args: list[str | int] = [
            query.mode,
            query.limit,
            "" if first is None else first,
            "" if query.end_ms is None else query.end_ms,
            TIME_PATTERN[series],
            RECORD_ID_PATTERN[series],
            TAIL_KEPT,
        ]
        keys = [
            snapshot_key(series, symbol),
            tail_key(series, symbol),
            backfilled_key(series, symbol),
            origin_key(series, symbol),
        ]
        try:
            reply = self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        status = _text(reply[0])
        if status == FETCH:
            by_time = _text(reply[1]) == "time"
            request = Backfill(AGG_TRADE_BY_TIME if by_time else series, symbol, int(reply[2]))
            return Answer(FETCH, [], request)
        return Answer(status, list(reply[1:]) if status == OK else [])

    def ask(self, request: Backfill) -> None:
        """Ask the messenger for a backfill (concurrent asks for the same one are one request)."""
        try:
            backfill.ask(self.client, request)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["AGG_TRADE", "Answer", "Query", "TradeHistoryStore"]
