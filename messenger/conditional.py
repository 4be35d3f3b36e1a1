"""Conditional writes: a batch of records written, and vouchers withdrawn, by one script in Redis.

Several messengers may write the same key (replicas of a stream, or the old and the new owner
during a handover), so whether a record replaces the stored one is decided in Redis, atomically,
from the order each record carries (contract.ordering) and the vouchers it names
(contract.records), never from what a messenger believes is stored:

- a newer order replaces the stored record, which then names the writer's voucher alone;
- an equal or older one leaves the value as it is and adds the writer's voucher to the record's
  (dropping vouchers whose key no longer exists), and renews its TTL: the writer's connection is
  live and carries the stream, so anything newer will reach it and be written (the rule
  messenger.book applies to connections within one messenger);
- but a stored record no other messenger's live voucher stands behind is a leftover (a stopped
  run, an exchange restarted with lower ids, a Redis restored from before): any write replaces
  it, whatever the orders; so does a record with no order (a REST seed without one) when nothing
  is stored;
- a messenger keeps at most one voucher in a record (the one its latest write names): its other
  vouchers there are replaced by it.

Only a record that replaced the stored one is published to a watched key's channel; so are the
closed candles it superseded (messenger.book.Entry.superseded), each only if newer than what was
stored. A withdrawal (a key this messenger no longer vouches for, or the messenger stopping)
removes this messenger's vouchers from the record, and deletes it (publishing the empty message
if watched) only if no other live voucher remains.

A messenger that writes alone (messenger.sole_writer) sends its small, unwatched records as plain
SETs instead: the script would replace the stored record for each of them anyway.

A batch is one EVALSHA for every SCRIPT_KEYS keys, all sent with the writer's other commands in one
round trip (messenger.resp). A script runs whole, with every other client of Redis waiting (the
server's reads among them), so a long batch (hundreds of records after a stall, at 6-20 us each) is
cut into scripts Redis answers others between. Redis forgets scripts when it restarts: the writer
loads it again on NOSCRIPT. A script's arguments are copied into Lua and back, which for a large
record (a deep order book: 60 KB at 1,000 levels) costs Redis five times a plain SET. So a record
over STAGE_BYTES is written under a key of this messenger's own first (contract.keys.staged_key),
in the same round trip, and the script renames it into place if it replaces the stored one (deletes
it if not): the record never passes through Lua.
"""

from __future__ import annotations

import functools
import hashlib

from contract.records import ORDER_START, VOUCHERS_START

# A written record this small has what is stored under its key read by one MGET with the others
# (whole: a stored record is about as large as the one replacing it); a larger one has its head
# read by GETRANGE. MGET_CHUNK keys per MGET keep within what Lua's unpack() takes.
PREFETCH_BYTES = 1024
MGET_CHUNK = 1000
# KEYS: the keys withdrawn from (ARGV[3] of them), then the keys written.
# ARGV[1]: the records' TTL (ms); ARGV[2]: this messenger's voucher prefix (contract.keys.voucher_prefix);
# ARGV[3]: how many keys are withdrawn from; then '1' or '0' (watched) for each of those; then for
# each key written: '0', '1' (watched), '2' (staged) or '3' (both), how many superseded messages,
# those, and the record, or for a staged one the key it was staged under (STAGE_BYTES).
# Returns {records that replaced the stored one, records joined (voucher added), keys deleted}.
SCRIPT = (
    f"""
local VOUCHERS, ORDER = '{VOUCHERS_START}', '{ORDER_START}'
local PREFETCH_BYTES, MGET_CHUNK = {PREFETCH_BYTES}, {MGET_CHUNK}
"""
    + """
local find, sub = string.find, string.sub
local ttl, mine, withdrawn = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- A record's head, read with plain finds (a pattern match costs several times more, per record):
-- where its voucher list ends (the quote after it) and its order ('' if it has none), or nil if it
-- is not a record (or its head is cut off: a large record's first 1,024 bytes).
local function head(record)
  if find(record, VOUCHERS, 1, true) ~= 1 then return nil end
  local q = find(record, '"', 13, true)
  if not q then return nil end
  if find(record, ORDER, q, true) ~= q then return q, '' end
  local e = find(record, '"', q + 11, true)
  if not e then return nil end
  return q, sub(record, q + 11, e - 1)
end
-- The voucher list of a record whose head ends at ``q``.
local function vouchers(record, q) return sub(record, 13, q - 1) end
local function newer(order, than)
  if than == '' or #order ~= #than then return true end
  return order > than
end
-- This messenger's vouchers: its prefix, whatever generation of its names follows (``<run>:`` or
-- ``<run>.<generation>:``, messenger.writer).
local base = sub(mine, 1, #mine - 1)
local function ours(voucher)
  if sub(voucher, 1, #base) ~= base then return false end
  local after = sub(voucher, #base + 1, #base + 1)
  return after == ':' or after == '.'
end
-- The vouchers of a record that stay: every other messenger's that is alive, in their order,
-- with ``voucher`` (if any) where this messenger's was, else last. Also how many others stay.
local function staying(named, voucher)
  local out, others, placed = {}, 0, voucher == nil
  for v in string.gmatch(named, '%S+') do
    if ours(v) then
      if not placed then out[#out + 1], placed = voucher, true end
    elseif redis.call('EXISTS', v) == 1 then
      out[#out + 1], others = v, others + 1
    end
  end
  if not placed then out[#out + 1] = voucher end
  return table.concat(out, ' '), others
end
-- The head is all a decision needs: a large record (a deep order book) is read whole only when
-- its head is not within its first 1,024 bytes, or when it is rewritten with other vouchers.
local function peek(key)
  local start = redis.call('GETRANGE', key, 0, 1023)
  if start == '' then return false end
  local q, order = head(start)
  if q or #start < 1024 then return start, q, order end
  start = redis.call('GET', key)
  q, order = head(start)
  return start, q, order
end
-- The record with ``list`` for vouchers (its head ends at ``q``).
local function revouched(key, record, q, list)
  if #record >= 1024 then record = redis.call('GET', key) end
  return VOUCHERS .. list .. sub(record, q)
end
local replaced, joined, deleted = 0, 0, 0
local i = 4
for k = 1, withdrawn do
  local key, watched = KEYS[k], ARGV[i]
  i = i + 1
  local record, q = peek(key)
  if record then
    local named, list, others = nil, '', 0
    if q then
      named = vouchers(record, q)
      list, others = staying(named, nil)
    end
    if others == 0 then
      redis.call('DEL', key)
      deleted = deleted + 1
      if watched == '1' then redis.call('PUBLISH', key, '') end
    elseif list ~= named then
      redis.call('SET', key, revouched(key, record, q, list), 'KEEPTTL')
    end
  end
end
-- What is stored under the small records' keys, read by MGET a chunk of keys at a time: one call
-- costs Redis about what one GETRANGE does, so a batch of small records pays one read, not one each.
local prefetched, small, at = {}, {}, i
for k = withdrawn + 1, #KEYS do
  local n = tonumber(ARGV[at + 1])
  local value = ARGV[at + 2 + n]
  if (ARGV[at] == '0' or ARGV[at] == '1') and #value <= PREFETCH_BYTES then small[#small + 1] = k end
  at = at + 3 + n
end
for c = 1, #small, MGET_CHUNK do
  local chunk = {}
  for j = c, math.min(c + MGET_CHUNK - 1, #small) do chunk[#chunk + 1] = KEYS[small[j]] end
  local found = redis.call('MGET', unpack(chunk))
  for j = 1, #chunk do prefetched[small[c + j - 1]] = found[j] end
end
local rewritten = {}  -- keys written by this batch already: their prefetched record is gone
for k = withdrawn + 1, #KEYS do
  local key, flags, n = KEYS[k], ARGV[i], tonumber(ARGV[i + 1])
  local first = i + 2
  local value = ARGV[first + n]
  i = first + n + 1
  local watched, staged = flags == '1' or flags == '3', flags == '2' or flags == '3'
  local written = staged and redis.call('GETRANGE', value, 0, 1023) or value
  local wq, order = head(written)
  if wq then
    local record, q, stored = prefetched[k], nil, nil
    if record == nil or rewritten[key] then record, q, stored = peek(key)
    elseif record then q, stored = head(record) end
    local replace, named, list, others = true, nil, nil, 0
    if record and q then
      if order ~= '' then replace = newer(order, stored) end
      if not replace or order == '' then
        -- Not newer (or no order to tell): the stored value stays only while another member's
        -- live voucher stands behind it. One nobody live vouches for is a leftover (a stopped
        -- run, an exchange restarted with lower ids, a Redis restored from before): replaced.
        named = vouchers(record, q)
        list, others = staying(named, vouchers(written, wq))
        replace = others == 0
      end
    end
    if replace then
      -- A staged record takes the key's place whole (with its TTL): it never passes through here.
      if staged then redis.call('RENAME', value, key) else redis.call('SET', key, value, 'PX', ttl) end
      rewritten[key] = true
      replaced = replaced + 1
      if watched then
        for s = first, first + n - 1 do
          local _, closed = head(ARGV[s])
          if not q or stored == '' or newer(closed, stored) then redis.call('PUBLISH', key, ARGV[s]) end
        end
        if staged then value = redis.call('GET', key) end
        redis.call('PUBLISH', key, value)
      end
    else
      if staged then redis.call('DEL', value) end
      joined = joined + 1
      if list == named then
        redis.call('PEXPIRE', key, ttl)
      else
        redis.call('SET', key, revouched(key, record, q, list), 'PX', ttl)
        rewritten[key] = true
      end
    end
  end
end
return {replaced, joined, deleted}
"""
)
# Records larger than this are staged (see above); below it, the copies cost less than the SET.
STAGE_BYTES = 4096
# Keys a script takes at most: ~0.3-1 ms of Redis (see above). Each more script costs Redis about
# what one more record does; at 20,000 frames/s a batch holds ~25 records, one script.
SCRIPT_KEYS = 48
SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest().encode()


def bulk(arg: bytes) -> bytes:
    """``arg`` as a RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


@functools.lru_cache(maxsize=8)
def _head(ttl_ms: int, voucher_prefix: str) -> bytes:
    return bulk(b"%d" % ttl_ms) + bulk(voucher_prefix.encode())


# A written key's arguments: its flags (watched 1, staged 2), no superseded messages, its record.
_ARGS = {flags: b"$1\r\n%d\r\n$1\r\n0\r\n" % flags + b"$%d\r\n%b\r\n" for flags in range(4)}
_FLAGS = {flags: b"$1\r\n%d\r\n" % flags for flags in range(4)}
_PLAIN = _ARGS[0]


class ScriptBatch:
    """Withdrawals and records (SCRIPT_KEYS at most: the writer starts another when one is full),
    as one EVALSHA of SCRIPT (RESP bytes: see ``command``)."""

    def __init__(self, ttl_ms: int, voucher_prefix: str) -> None:
        self._head = _head(ttl_ms, voucher_prefix)
        self._withdrawn: list[bytes] = []
        self._withdrawn_args: list[bytes] = []
        self._written: list[bytes] = []
        self._written_args: list[bytes] = []
        self._args = 0  # arguments of the written keys
        self.keys = 0  # keys withdrawn from and written (``len``, without a call: the writer asks per record)

    def withdraw(self, key: bytes, watched: bool) -> None:
        """Withdraw this messenger's vouchers from ``key``'s record (deleting it if none is left)."""
        self._withdrawn.append(bulk(key))
        self._withdrawn_args.append(b"$1\r\n1\r\n" if watched else b"$1\r\n0\r\n")
        self.keys += 1

    def write(
        self,
        key: bytes,
        value: bytes,
        watched: bool,
        superseded: list[bytes] | None = None,
        staged: bool = False,
    ) -> None:
        """Write ``value`` under ``key`` if its order allows (publishing it, and ``superseded``
        before it, if ``watched``). ``staged``: ``value`` is the key the record was written
        under just before (``SET staged_key record PX ttl``, in the same round trip)."""
        self._written.append(b"$%d\r\n%b\r\n" % (len(key), key))
        self.keys += 1
        flags = watched + 2 * staged
        if superseded:
            n = len(superseded)
            args = [_FLAGS[flags], bulk(b"%d" % n)]
            args.extend(bulk(s) for s in superseded)
            args.append(bulk(value))
            self._written_args.append(b"".join(args))
            self._args += 3 + n
        else:
            self._written_args.append(_ARGS[flags] % (len(value), value))
            self._args += 3

    def write_plain(self, bulk_key: bytes, value: bytes) -> None:
        """``write(key, value, False)``, the record of nearly every write, with the key given as
        its RESP bulk string (``bulk(key)``, made once by the writer for every key it writes)."""
        self._written.append(bulk_key)
        self._written_args.append(_PLAIN % (len(value), value))
        self._args += 3
        self.keys += 1

    def __bool__(self) -> bool:
        return self.keys > 0

    def __len__(self) -> int:
        """Keys withdrawn from and written."""
        return self.keys

    def command(self) -> bytes:
        """``EVALSHA`` of the whole batch, as RESP."""
        withdrawn, written = self._withdrawn, self._written
        keys = len(withdrawn) + len(written)
        count = 3 + keys + 3 + len(withdrawn) + self._args
        return b"".join(
            [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n" % (count, SHA), bulk(b"%d" % keys),
             *withdrawn, *written, self._head, bulk(b"%d" % len(withdrawn)),
             *self._withdrawn_args, *self._written_args]
        )  # fmt: skip
