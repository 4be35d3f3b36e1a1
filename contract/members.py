"""Members: every messenger run on one Redis, and what the server reads of them.

A member registers in MEMBERS_KEY scored by when it is presumed dead (its last word plus
LIVENESS_TIMEOUT_MS); a member scored in the past is dead (one that stopped cleanly scores
itself so at once). Each writes its heartbeat (contract.keys.member_key, gone with its TTL) and
what it streams (contract.keys.member_streams_key), so two members never overwrite each
other's word.

The stream states are read through scripts (one round trip, whatever the number of members): a
stream is ``live`` if any registered member says so, else ``pending`` if any does. A member that
died or stopped is registered until swept (contract.keys.RECORD_TTL_MS later): what it streamed
still reads ``live``, so its values, gone, answer 500 (streamed, not current) until another
member carries them, as they did when there was one messenger.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis

from contract.keys import LIVE, MEMBER_STREAMS_KEY_PREFIX, MEMBERS_KEY, member_key
from contract.redis_client import queue_script

# The registered members' stream hashes (KEYS[1]: MEMBERS_KEY; the hashes' prefix as argument),
# and one stream's state over them.
STATES_LUA = (
    """
local function member_hashes(members, prefix)
  local hashes = {}
  for _, m in ipairs(redis.call('ZRANGE', members, 0, -1)) do
    hashes[#hashes + 1] = prefix .. m
  end
  return hashes
end
local function stream_state(hashes, key)
  local state = false
  for _, h in ipairs(hashes) do
    local s = redis.call('HGET', h, key)
    if s == '"""
    + LIVE
    + """' then return s end
    if s then state = s end
  end
  return state
end
"""
)
# ARGV: the hashes' prefix, then the keys. Returns each key's state (or false).
STATES_SCRIPT = (
    STATES_LUA
    + """
local hashes = member_hashes(KEYS[1], ARGV[1])
local out = {}
for i = 2, #ARGV do out[i - 1] = stream_state(hashes, ARGV[i]) end
return out
"""
)
# ARGV: the hashes' prefix, a key prefix. Returns every key a registered member streams that
# starts with the key prefix, once.
STREAMED_SCRIPT = (
    STATES_LUA
    + """
local seen, out = {}, {}
local n = #ARGV[2]
for _, h in ipairs(member_hashes(KEYS[1], ARGV[1])) do
  for _, key in ipairs(redis.call('HKEYS', h)) do
    if not seen[key] and string.sub(key, 1, n) == ARGV[2] then
      seen[key] = true
      out[#out + 1] = key
    end
  end
end
return out
"""
)


def now_ms() -> int:
    """Epoch milliseconds, as members are scored."""
    return int(time.time() * 1000)


class StreamStates:
    """What registered members stream: each key's state, or every key of a kind."""

    def __init__(self, client: redis.Redis) -> None:
        self._states = client.register_script(STATES_SCRIPT)
        self._streamed = client.register_script(STREAMED_SCRIPT)

    def states(self, keys: Sequence[str], client: Any = None) -> Any:
        """``pending`` / ``live`` / None per key (bytes as Redis answers); with ``client`` a
        pipeline, queued on it."""
        args = [MEMBER_STREAMS_KEY_PREFIX, *keys]
        if client is not None:
            return queue_script(client, self._states, [MEMBERS_KEY], args)
        return self._states(keys=[MEMBERS_KEY], args=args)

    def streamed(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` that a registered member streams."""
        raw = self._streamed(keys=[MEMBERS_KEY], args=[MEMBER_STREAMS_KEY_PREFIX, prefix])
        return [k.decode() if isinstance(k, bytes) else str(k) for k in raw]


def live_members(client: redis.Redis) -> list[str]:
    """The members not presumed dead, in order of their id."""
    raw: Any = client.zrangebyscore(MEMBERS_KEY, f"({now_ms()}", "+inf")
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)


def heartbeats(client: redis.Redis) -> tuple[list[str], list[dict[str, Any]]]:
    """(live members, the heartbeats of those heard from within SNAPSHOT_TTL_MS); each heartbeat
    names its ``member``."""
    members = live_members(client)
    if not members:
        return members, []
    beats = []
    for member, raw in zip(members, client.mget([member_key(m) for m in members]), strict=True):
        if raw is None:
            continue
        try:
            beat = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(beat, dict):
            beats.append({**beat, "member": member})
    return members, beats
