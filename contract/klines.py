"""Kept candles: the Redis layout of a symbol's closed klines of one interval, and its rules.

| key | type | what |
|---|---|---|
| ``transmute:klines:<interval>:<symbol>:{b}`` | sorted set | closed candles, score: open time, member: row |
| ``transmute:klines:<interval>:<symbol>:{b}:origin`` | string | the set reaches back to the first candle |
| ``transmute:klines:<interval>:<symbol>:{b}:gen`` | string | counts its writes: a copy is current |
| ``transmute:klines:<interval>:<symbol>:{b}:from:<t>`` | string, TTL | an older page: rows from ``t`` |
| ``transmute:klines:<interval>:<symbol>:{b}:to:<t>`` | string, TTL | an older page: rows up to ``t`` |

A member is the candle exactly as Binance's ``GET /api/v3/klines`` spells its row (12 fields,
prices and volumes as strings), so that an answer is the members joined, never re-encoded. The
open candle is not kept here: it is the kline stream's record (contract.records, vouched for like
every record) under ``transmute:kline_<interval>:<symbol>:{b}``, in the same slot (contract.keys).

One invariant, kept by the write script whatever the interleaving: **the set is contiguous**.
Each candle's open time is the previous one's close time + 1 (which also holds for calendar
months). A write that would leave a hole is refused, so a gap is never stored, and a reader that
finds the stream's open candle further on than the last kept close + 1 knows a range is missing.

Written by the messenger only (messenger.kline_history); read by the server (BOUNDS_SCRIPT: the
first and last kept rows, the origin mark, the write count and the open candle's record with its
voucher, in one round trip; the rows themselves only when its copy is not of that write count).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from contract.keys import symbol_tag
from contract.servable import VOUCHED_LUA

KLINES_KEY_PREFIX = "transmute:klines:"
ORIGIN_SUFFIX = ":origin"
GENERATION_SUFFIX = ":gen"
# A range too old to join the kept set within KLINE_HISTORY_MAX is fetched as a page of its own: the
# exchange's answer to ``startTime=<t>&limit=1000``, closed candles only (they never change), kept
# this long for the requests that walk through history a page at a time.
PAGE_FROM = ":from:"
# The same for a range asked for by its end alone: the answer to ``endTime=<t>&limit=1000``.
PAGE_TO = ":to:"
PAGE_TTL_MS = 120_000
PAGE_ROWS = 1000
# The shortest window of each interval (a calendar month is at least 28 days).
SHORTEST_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000, "1M": 2_419_200_000,
}  # fmt: skip
# And the longest (a calendar month is at most 31 days).
LONGEST_MS = {**SHORTEST_MS, "1M": 2_678_400_000}
# Kept series outlive their last write by this much: history is worth keeping across a messenger
# restart or a quiet day, and is renewed with every closed candle.
HISTORY_TTL_MS = 7 * 24 * 3_600_000

# A row's open time (field 1) and close time (field 7), read without parsing JSON.
_ROW_TIMES = re.compile(rb'^\[(-?\d+),"[^"]*","[^"]*","[^"]*","[^"]*","[^"]*",(-?\d+),')
_LUA_ROW_TIMES = '^%[(%-?%d+),"[^"]*","[^"]*","[^"]*","[^"]*","[^"]*",(%-?%d+),'


def klines_key(interval: str, symbol: str) -> str:
    """Key of the kept candles of one symbol (any case) and interval (exact: ``1m`` vs ``1M``)."""
    return f"{KLINES_KEY_PREFIX}{interval}:{symbol.lower()}:{symbol_tag(symbol)}"


def origin_key(interval: str, symbol: str) -> str:
    """Key that says the kept candles reach back to the symbol's first."""
    return klines_key(interval, symbol) + ORIGIN_SUFFIX


def generation_key(interval: str, symbol: str) -> str:
    """Key counting the writes of a kept set: a reader's copy is the set while the count is the same."""
    return klines_key(interval, symbol) + GENERATION_SUFFIX


def write_keys(interval: str, symbol: str) -> list[str]:
    """The keys WRITE_SCRIPT takes, in its order: the set, its origin mark, its write count."""
    return [klines_key(interval, symbol), origin_key(interval, symbol), generation_key(interval, symbol)]


def page_key(interval: str, symbol: str, start: int) -> str:
    """Key of an older page of candles, from ``start`` (epoch ms) on."""
    return f"{klines_key(interval, symbol)}{PAGE_FROM}{start}"


def page_to_key(interval: str, symbol: str, end: int) -> str:
    """Key of an older page of candles, up to ``end`` (epoch ms)."""
    return f"{klines_key(interval, symbol)}{PAGE_TO}{end}"


def backfill_series(interval: str, up_to: bool = False) -> str:
    """The series a backfill asks for (contract.backfill): candles from its reach on
    (``kline_1m``), or, with ``up_to``, the 1,000 up to its reach (``klineto_1m``)."""
    return f"{'klineto' if up_to else 'kline'}_{interval}"


def encode_row(row: list[Any]) -> bytes:
    """A row as kept: Binance's 12 fields, compact JSON."""
    return orjson.dumps(row)


def row_times(member: Any) -> tuple[int, int]:
    """(open time, close time) of a kept row (bytes, as Redis returns it)."""
    match = _ROW_TIMES.match(member) if isinstance(member, bytes) else None
    if match is None:
        raise ValueError(f"not a kline row: {member[:80]!r}")
    return int(match.group(1)), int(match.group(2))


def row_from_record(record: dict[str, Any]) -> list[Any]:
    """The Binance row of a kline stream record (messenger.binance.KLINE_FIELDS)."""
    return [
        record["open_time"], record["open"], record["high"], record["low"], record["close"],
        record["volume"], record["close_time"], record["quote_volume"], record["trades"],
        record["taker_buy_base_volume"], record["taker_buy_quote_volume"], "0",
    ]  # fmt: skip


# KEYS: set, origin, write count (write_keys). ARGV: mode, keep, cap, ttl_ms, then open time and row
# pairs, oldest first. Every write it does counts one more in the write count.
#   append:  after the last kept row; rows already kept are skipped; refused (-2) if the first new
#            row does not open at the last kept close + 1, or (-1) if nothing is kept yet.
#   prepend: before the first kept row, same rule the other way; ARGV "origin" mode variant
#            ``prepend-origin`` also marks that nothing exists before these rows.
#   seed:    replace whatever is kept (``seed-origin``: and mark the origin).
# Appending slides the window: past max(keep, what was kept before) it drops the oldest (and the
# origin mark). Prepending grows it up to ``cap`` rows, and refuses (-3) past that.
# Returns the number of rows kept after the write.
WRITE_SCRIPT = (
    """
local mode, keep, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
local function times(member)
  local o, c = string.match(member, '"""
    + _LUA_ROW_TIMES
    + """')
  return tonumber(o), tonumber(c)
end
if mode == 'seed' or mode == 'seed-origin' then
  redis.call('DEL', KEYS[1])
  if mode == 'seed-origin' then redis.call('SET', KEYS[2], '1', 'PX', ttl) else redis.call('DEL', KEYS[2]) end
  for i = 0, n - 1 do redis.call('ZADD', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i]) end
elseif mode == 'append' then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1)[1]
  if not last then return -1 end
  local last_open, last_close = times(last)
  local expect = last_close + 1
  local limit = math.max(keep, redis.call('ZCARD', KEYS[1]))
  local add = {}
  for i = 0, n - 1 do
    local open = tonumber(ARGV[5 + 2 * i])
    if open > last_open then
      if open ~= expect then return -2 end
      add[#add + 1] = {open, ARGV[6 + 2 * i]}
      local _, close = times(ARGV[6 + 2 * i])
      expect = close + 1
    end
  end
  for _, pair in ipairs(add) do redis.call('ZADD', KEYS[1], pair[1], pair[2]) end
  local excess = redis.call('ZCARD', KEYS[1]) - limit
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
    redis.call('DEL', KEYS[2])
  end
else
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not first then return -1 end
  local first_open = times(first)
  local add = {}
  for i = n - 1, 0, -1 do
    local open = tonumber(ARGV[5 + 2 * i])
    if open < first_open then
      local _, close = times(ARGV[6 + 2 * i])
      if close + 1 ~= first_open then return -2 end
      add[#add + 1] = {open, ARGV[6 + 2 * i]}
      first_open = open
    end
  end
  if redis.call('ZCARD', KEYS[1]) + #add > cap then return -3 end
  for _, pair in ipairs(add) do redis.call('ZADD', KEYS[1], pair[1], pair[2]) end
  if mode == 'prepend-origin' then redis.call('SET', KEYS[2], '1', 'PX', ttl) end
end
redis.call('PEXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ttl)
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS: set, origin, write count, the open candle's record. Returns {first kept row, last kept row,
# how many, origin mark, write count, record, its voucher's last word}: the record only while its
# voucher exists (contract.servable's read rule). The rows themselves are read apart (ZRANGE), or
# not at all when the reader holds the set as of this write count.
BOUNDS_SCRIPT = (
    VOUCHED_LUA
    + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1] or false
local last = redis.call('ZRANGE', KEYS[1], -1, -1)[1] or false
local count = redis.call('ZCARD', KEYS[1])
local origin = redis.call('EXISTS', KEYS[2])
local generation = redis.call('GET', KEYS[3]) or false
local record, heard = vouched(KEYS[4])
return {first, last, count, origin, generation, record, heard}
"""
)
