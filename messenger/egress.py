"""One Binance budget per egress address, shared in Redis by every member behind it.

Binance counts per public IP: 300 new WebSocket connections per 5 minutes, a REST request weight
of 6,000 per minute, and a 429 (or 418, a ban) with ``Retry-After`` speaks for the whole IP.
Members that share an address (the ``EGRESS`` setting names it) therefore share one budget:

- a new connection is taken from ``EGRESS_CONNECTIONS`` per ``EGRESS_CONNECTION_WINDOW_S`` (a
  rolling window of attempts) before its handshake is sent;
- every REST call takes its weight from ``EGRESS_REST_WEIGHT`` per rolling minute before it is
  sent (each purpose keeps its own pacing on top, e.g. order book snapshots);
- a 429/418 seen by any member is written as the egress's back-off: every take of every member
  is refused until its ``Retry-After`` has passed;
- the weight Binance reports used (``X-MBX-USED-WEIGHT-1M``) raises the window when it holds less
  (after a Redis restart emptied it, or when something else on the address spends weight).

Each take is one Lua script (one round trip, atomic: no interleaving of members can overspend),
timed by Redis's own clock so members on different hosts agree on the windows. An attempt is
counted before it is sent and held TRANSIT_MS past the window, so the budget's window holds what
Binance's does (an attempt still on its way after that is rare; the margin below the limit covers it).

When Redis cannot be reached the take is refused (fail closed): a member that cannot reach Redis
cannot publish anything it would fetch, and a local guess could only overspend the shared budget.
Connections already open are not affected; only new ones and REST calls wait for Redis.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

import redis

from contract import keys

logger = logging.getLogger(__name__)

# An attempt is counted when taken, Binance counts it when it arrives (a handshake, a request):
# the budget holds each one this much longer than Binance's window, so that whatever Binance still
# counts, the budget does too. Arrivals later than this are rare; the budget's margin covers them.
TRANSIT_MS = 2000
# A take refused because Redis cannot be reached is tried again this much later.
UNREACHABLE_RETRY_S = 1.0
# Why a take was refused.
BUDGET, BACKOFF, UNREACHABLE = "budget", "backoff", "unreachable"
CONNECTION, WEIGHT = "connection", "weight"

# KEYS[1]: the budget (connection: a sorted set of attempts scored by their time; weight: a hash
# of epoch second -> weight taken in it). KEYS[2]: the back-off, the epoch ms until which nobody
# calls. ARGV: kind, amount, limit, window in ms, a unique member name for this attempt.
# Returns {granted, wait ms, used in the window (after a grant)}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kind, amount = ARGV[1], tonumber(ARGV[2])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if kind == 'backoff' then
  if now + amount > held then
    redis.call('SET', KEYS[2], now + amount, 'PX', amount)
    held = now + amount
  end
  return {1, held - now, 0}
end
if held > now and kind ~= 'observed' then
  return {0, held - now, -1}
end
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
if kind == 'connection' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local used = redis.call('ZCARD', KEYS[1])
  if used + amount > limit then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now + 1, used}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0, used + amount}
end
-- Weight, in buckets of one second: a bucket counts while any of it is within the window, so
-- the window held is a little longer than Binance's, never shorter.
local second = math.floor(now / 1000)
local first = second - math.floor(window / 1000)
local buckets = redis.call('HGETALL', KEYS[1])
local used, oldest = 0, second
for i = 1, #buckets, 2 do
  local b = tonumber(buckets[i])
  if b < first then
    redis.call('HDEL', KEYS[1], buckets[i])
  else
    used = used + tonumber(buckets[i + 1])
    if b < oldest then oldest = b end
  end
end
-- Binance reported this much used on the address: the window holds at least as much.
if kind == 'observed' then
  if amount > used then
    redis.call('HINCRBY', KEYS[1], second, amount - used)
    redis.call('PEXPIRE', KEYS[1], window + 2000)
    return {1, 0, amount}
  end
  return {0, 0, used}
end
-- A call heavier than the whole budget goes alone, in an empty window.
if used > 0 and used + amount > limit then
  return {0, (oldest + math.floor(window / 1000) + 1) * 1000 - now, used}
end
redis.call('HINCRBY', KEYS[1], second, amount)
redis.call('PEXPIRE', KEYS[1], window + 2000)
return {1, 0, used + amount}
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to a take: granted, or how long to wait and why (BUDGET, BACKOFF, UNREACHABLE)."""

    granted: bool
    wait_s: float = 0.0
    why: str = ""


class Egress:
    """The budget of one egress address, shared by every member that takes from it (thread-safe)."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        connections: int,
        connection_window_s: float,
        weight_per_minute: int,
        weight_window_s: float = 60.0,
    ) -> None:
        """``weight_window_s``: Binance's minute; shorter only in tests."""
        self.client = client
        self.name = name
        self.connections = connections
        self.connection_window_ms = round(connection_window_s * 1000)
        self.weight_per_minute = weight_per_minute
        self.weight_window_ms = round(weight_window_s * 1000)
        self._keys = {
            CONNECTION: keys.egress_connections_key(name),
            WEIGHT: keys.egress_weight_key(name),
        }
        self._backoff_key = keys.egress_backoff_key(name)
        self._script = client.register_script(_TAKE)
        self._ids = itertools.count()
        self._run = secrets.token_hex(4)
        self._lock = threading.Lock()
        # Until when (monotonic) a shared back-off is known to hold: no round trip before then.
        self._backoff_until = 0.0
        # For the metrics: takes granted and refused, by kind (and why), what was last seen used.
        self.granted: Counter[str] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()
        self.used: dict[str, int] = {CONNECTION: 0, WEIGHT: 0}
        self.backoffs_shared = 0
        self.raised = 0  # times Binance's reported weight raised the window (observed_weight)
        self._unreachable_logged = False

    def take_connection(self) -> Grant:
        """Take one new connection attempt from the budget, before its handshake is sent."""
        return self._take(CONNECTION, 1, self.connections, self.connection_window_ms)

    def take_weight(self, weight: int) -> Grant:
        """Take a REST call's weight from the minute's budget, before the call is sent."""
        return self._take(WEIGHT, weight, self.weight_per_minute, self.weight_window_ms)

    def observed_weight(self, used: int) -> None:
        """Binance reported ``used`` weight this minute (``X-MBX-USED-WEIGHT-1M``): if the budget's
        window holds less (Redis restarted and forgot it, or something else on the address spends
        weight), it is raised to that, for every member."""
        if used <= self.used[WEIGHT]:
            return  # the window held at least that much when this member last took from it
        try:
            raised, _, total = self._script(
                keys=[self._keys[WEIGHT], self._backoff_key],
                args=["observed", used, self.weight_per_minute, self.weight_window_ms + TRANSIT_MS, ""],
            )
        except redis.RedisError:
            return  # takes are refused meanwhile anyway
        self.used[WEIGHT] = max(self.used[WEIGHT], int(total))
        self.raised += int(raised)

    def back_off(self, wait_s: float) -> None:
        """Binance said to wait (a 429/418's Retry-After): every member of this egress waits."""
        with self._lock:
            self._backoff_until = max(self._backoff_until, time.monotonic() + wait_s)
        try:
            self._script(keys=[self._keys[CONNECTION], self._backoff_key],
                         args=["backoff", max(1, round(wait_s * 1000)), 0, 0, ""])  # fmt: skip
        except redis.RedisError as exc:
            logger.warning("egress %s: cannot share a back-off of %.0f s (%s)", self.name, wait_s, exc)
            return
        self.backoffs_shared += 1

    def backoff_left_s(self) -> float:
        """How long the back-off this member knows of still holds (0: none known)."""
        return max(0.0, self._backoff_until - time.monotonic())

    def _take(self, kind: str, amount: int, limit: int, window_ms: int) -> Grant:
        left = self.backoff_left_s()
        if left > 0:
            return self._refuse(kind, Grant(False, left, BACKOFF))
        member = f"{self._run}:{next(self._ids)}"
        try:
            granted, wait_ms, used = self._script(
                keys=[self._keys[kind], self._backoff_key],
                args=[kind, amount, limit, window_ms + TRANSIT_MS, member],
            )
        except redis.RedisError as exc:
            if not self._unreachable_logged:
                logger.warning("egress %s: Redis unreachable (%s); no new connection or REST call "
                               "until it is back", self.name, exc)  # fmt: skip
                self._unreachable_logged = True
            return self._refuse(kind, Grant(False, UNREACHABLE_RETRY_S, UNREACHABLE))
        self._unreachable_logged = False
        wait_s = int(wait_ms) / 1000
        if int(used) >= 0:
            self.used[kind] = int(used)
        if int(granted):
            self.granted[kind] += 1
            return Grant(True)
        if int(used) < 0:
            with self._lock:
                self._backoff_until = max(self._backoff_until, time.monotonic() + wait_s)
            return self._refuse(kind, Grant(False, wait_s, BACKOFF))
        return self._refuse(kind, Grant(False, max(wait_s, 0.001), BUDGET))

    def _refuse(self, kind: str, grant: Grant) -> Grant:
        self.refused[kind, grant.why] += 1
        return grant
