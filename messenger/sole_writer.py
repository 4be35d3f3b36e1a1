"""The sole writer: plain SETs in place of the conditional script while no other messenger writes.

The conditional script (messenger.conditional) decides in Redis, record by record, whether a value
replaces the stored one, because several messengers may write the same key. It costs Redis about
2.5 times what a plain ``SET`` does, a record (reading what is stored, copying the record into Lua
and out), and it is half of what separates the messenger's freshness from the floor's
(README "Freshness"). Its decision is only ever different from a plain ``SET``'s when the stored
record names another messenger's live voucher: with no other messenger around, a record is
either this messenger's own (and its book never writes an older order than it wrote) or a leftover
(which any write replaces). So a messenger that knows, in Redis and at the instant of the write,
that no other messenger has a live voucher may write its records with plain ``SET``s.

That knowledge is kept in Redis, in one Redis (or Sentinel's primary); in a cluster every record
goes through the script as before:

- ``WRITERS_KEY`` (a hash): each messenger run that writes records or vouchers, with the instant
  (Redis's clock, epoch ms) until which its vouchers may live. Every writer registers (``REGISTER``)
  in every batch, before any record, and its voucher ``SET``s go inside that same script, before the
  entry is renewed: the entry outlives every voucher it covers in any state Redis can be seen in,
  a replica promoted by a failover included (a script's effects reach replicas as one transaction),
  without counting on how long Redis takes between two commands.
- ``WRITERS_JOINED_KEY`` (a counter): bumped by a registration that finds its run absent or expired
  (a new messenger, or one back from a stall), and by nothing else, so a writer's own renewals
  never disturb it.
- At the end of each batch the writer ``WATCH``es the counter, then asks ``ALONE``: is every other
  run's entry expired? If so, its next batch writes its plain records as ``SET``s inside
  ``MULTI``/``EXEC``, on the same connection. ``EXEC`` runs them only if the counter is untouched
  since the ``WATCH``: no other messenger registered (and so wrote nothing) in between, and none
  had a live voucher when the answer was given. If anyone joined, ``EXEC`` writes nothing and the
  writer rewrites everything through the script in the next batch.

Whatever the interleaving of two writers' commands, a plain ``SET`` lands only where the script
would have replaced the stored record: a writer that is about to write registers, and bumps the
counter, in the one script that writes its first vouchers and before its first record; and an
entry expires only after every voucher it covers. A writer that reconnects (``WATCH`` is per
connection) goes through the script until a batch on the new connection has asked again. Both
scripts go by ``EVAL``: small, and never lost to a Redis restart or ``SCRIPT FLUSH`` between a
``WATCH`` and its ``EXEC``.
"""

from __future__ import annotations

import functools

from contract.keys import WRITERS_JOINED_KEY, WRITERS_KEY
from contract.resp import command

# Redis's clock, epoch ms, as the scripts read it.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: WRITERS_KEY, WRITERS_JOINED_KEY, then the run's vouchers to write; ARGV: the run, how long
# its vouchers live (ms), then each voucher's value. Writes the vouchers (SET PX), then registers the
# run until now + ARGV[2], read after them; bumps the counter if the run was absent or expired. Once
# the hash holds more than SWEEP_AT runs, the expired ones are dropped (they count as absent anyway).
SWEEP_AT = 16
REGISTER = (
    """
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'PX', ARGV[2]) end
"""
    + _NOW
    + f"local SWEEP_AT = {SWEEP_AT}\n"
    + """
local until_ = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not until_ or until_ <= now then redis.call('INCR', KEYS[2]) end
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
if redis.call('HLEN', KEYS[1]) > SWEEP_AT then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[1], all[i]) end
  end
end
return 0
"""
)
# KEYS: WRITERS_KEY; ARGV: the run. 1 if every other run's entry has expired, else 0. Writes nothing.
ALONE = (
    _NOW
    + """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and tonumber(all[i + 1]) > now then return 0 end
end
return 1
"""
)

MULTI = command("MULTI")
EXEC = command("EXEC")
UNWATCH = command("UNWATCH")
WATCH = command("WATCH", WRITERS_JOINED_KEY)


@functools.lru_cache(maxsize=16)
def register(run: str, ttl_ms: int) -> bytes:
    """``REGISTER`` for ``run``, whose vouchers live ``ttl_ms``, with no voucher to write."""
    return command("EVAL", REGISTER, 2, WRITERS_KEY, WRITERS_JOINED_KEY, run, ttl_ms)


def register_vouching(run: str, ttl_ms: int, vouchers: list[tuple[str, int]]) -> bytes:
    """``REGISTER`` for ``run`` that first writes ``vouchers`` (key, value), each for ``ttl_ms``."""
    keys = [key for key, _ in vouchers]
    values = [value for _, value in vouchers]
    return command(
        "EVAL", REGISTER, 2 + len(keys), WRITERS_KEY, WRITERS_JOINED_KEY, *keys, run, ttl_ms, *values
    )


@functools.lru_cache(maxsize=16)
def alone(run: str) -> bytes:
    """``ALONE`` for ``run``: its reply is 1 if no other run's vouchers may be live."""
    return command("EVAL", ALONE, 1, WRITERS_KEY, run)


def set_tail(ttl_ms: int) -> bytes:
    """What follows a ``SET``'s key and value: ``PX ttl_ms``."""
    ttl = b"%d" % ttl_ms
    return b"$2\r\nPX\r\n$%d\r\n%b\r\n" % (len(ttl), ttl)


def plain_set(bulk_key: bytes, value: bytes, tail: bytes) -> bytes:
    """``SET key value PX ttl``: ``bulk_key`` as RESP, ``tail`` from ``set_tail``."""
    return b"*5\r\n$3\r\nSET\r\n%b$%d\r\n%b\r\n%b" % (bulk_key, len(value), value, tail)
