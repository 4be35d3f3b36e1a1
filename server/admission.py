"""Admission of new on-demand streams: a cap on how many are carried, and a rate per client.

Only a request that would start a stream comes here (a trading symbol with no value and no
stream state, see server.lookup); a request for a symbol already streamed never does, so the
hot path pays nothing. One Lua script, one round trip, atomic across gunicorn workers and
servers sharing the Redis:

- streams asked for within ``DEMAND_IDLE_S`` are the ones the messenger carries on demand (the
  rule of messenger.planner); if the request's new ones would take them past
  ``DEMAND_MAX_STREAMS``, it is refused (reason ``cap``);
- each new stream takes a token from the client's bucket (``DEMAND_CLIENT_STREAMS_PER_S``, up to
  ``DEMAND_CLIENT_BURST``); too few tokens, and it is refused (reason ``client_rate``);
- otherwise the demand is registered and the messenger woken.

Streams asked for already (within the idle window) are only refreshed and cost nothing. A
refusal says why and when to try again; the APIs answer it as 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from flask import current_app, request

from contract.keys import DEMAND_CHANNEL, DEMAND_KEY, client_budget_key, demand_member
from contract.settings import Settings
from server import metrics
from server.store import SnapshotStore, StoreUnavailable

CAP = "cap"
CLIENT_RATE = "client_rate"
EXTENSION = "transmute.admission"
# Forwarded addresses are the client's to write; only so much of one is kept as a key.
MAX_ADDRESS_LENGTH = 64

# KEYS: demand sorted set, the client's bucket.
# ARGV: now (ms), idle window (ms), cap, tokens per ms, burst, wake-up channel, members...
# Returns {verdict, ms to wait, new streams, streams carried on demand}.
SCRIPT = """
local now, idle = tonumber(ARGV[1]), tonumber(ARGV[2])
local since = now - idle
local new = 0
for i = 7, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not score or tonumber(score) < since then new = new + 1 end
end
local carried = redis.call('ZCOUNT', KEYS[1], since, '+inf')
if new > 0 then
  if carried + new > tonumber(ARGV[3]) then
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    local wait = idle
    if oldest[2] then wait = tonumber(oldest[2]) - since end
    return {'cap', math.ceil(wait), new, carried}
  end
  local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
  local bucket = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  local tokens, at = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  if tokens < new then
    return {'client_rate', math.ceil((math.min(new, burst) - tokens) / rate), new, carried}
  end
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - new), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate) + 1000)
end
for i = 7, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {'ok', 0, new, carried + new}
"""


class Refused(Exception):
    """New streams were not admitted: ``reason`` (cap, client_rate), and when to try again."""

    def __init__(self, reason: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """The answer's headers: ``Retry-After`` in whole seconds."""
        return {"Retry-After": str(self.retry_after_s)}


class Admission:
    """The limits, and the script that applies them."""

    def __init__(
        self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.max_streams = settings.demand_max_streams
        self.rate_per_s = settings.demand_client_streams_per_s
        self.burst = settings.demand_client_burst
        self.idle_ms = int(settings.demand_idle_s * 1000)
        self.proxy_hops = settings.trusted_proxy_hops
        self._script = client.register_script(SCRIPT)

    def demand(self, kind: str, symbols: list[str], address: str) -> int:
        """Ask the messenger for these streams (a kind's key segment) on behalf of ``address``;
        returns how many were new. Raises Refused over a limit, StoreUnavailable without Redis."""
        if not symbols:
            return 0
        members = [demand_member(kind, s) for s in symbols]
        args: list[Any] = [int(self.clock() * 1000), self.idle_ms, self.max_streams,
                           repr(self.rate_per_s / 1000), self.burst, DEMAND_CHANNEL, *members]  # fmt: skip
        try:
            verdict, wait_ms, new, carried = self._script(
                keys=[DEMAND_KEY, client_budget_key(address)], args=args
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        reason = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if reason == "ok":
            if new:
                metrics.SPAWNS.labels(kind).inc(new)
            return int(new)
        metrics.REFUSALS.labels(reason).inc()
        wait_s = max(1, math.ceil(int(wait_ms) / 1000))
        raise Refused(reason, self._why(reason, int(new), int(carried), wait_s), wait_s)

    def _why(self, reason: str, new: int, carried: int, wait_s: int) -> str:
        if reason == CAP:
            return (f"Too many streams on demand: at most {self.max_streams} are carried and {carried} are "
                    f"in use; this request would start {new} more. Try again in {wait_s} s.")  # fmt: skip
        if new > self.burst:
            return (f"This request would start {new} new streams; a client may start at most "
                    f"{self.burst} at once. Ask for fewer symbols.")  # fmt: skip
        return (f"Too many new streams from this client: at most {self.burst} at once and "
                f"{self.rate_per_s:g} a second. Try again in {wait_s} s.")  # fmt: skip


def client_address(environ: Mapping[str, Any], proxy_hops: int) -> str:
    """Who is asking: the socket peer or, behind ``proxy_hops`` trusted proxies, the address the
    outermost of them saw (that many entries from the end of X-Forwarded-For)."""
    address = str(environ.get("REMOTE_ADDR") or "unknown")
    if proxy_hops > 0:
        forwarded = [a.strip() for a in str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        if len(forwarded) >= proxy_hops and forwarded[-proxy_hops]:
            address = forwarded[-proxy_hops]
    return address[:MAX_ADDRESS_LENGTH]


def ask(store: SnapshotStore, kind: str, symbols: list[str]) -> int:
    """Admit new streams for the client of the current request: Admission.demand."""
    if not symbols:
        return 0
    gate: Admission | None = current_app.extensions.get(EXTENSION)
    if gate is None:
        gate = current_app.extensions[EXTENSION] = Admission(
            store.client, current_app.extensions["transmute.settings"]
        )
    return gate.demand(kind, symbols, client_address(request.environ, gate.proxy_hops))
