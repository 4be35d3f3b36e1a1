"""When a stored record may be served: the one read rule, as a Redis script both sides share.

A record (contract.records) names the connections that vouch for it (usually one; one per
messenger that carries its stream); each one's liveness key (contract.keys.voucher_key) exists
only while its messenger hears from it. The script reads each record and the liveness keys it
names in one round trip and returns a record only where one of them exists, so what is served
can never outlive the last word of the last connection vouching for it by more than
SNAPSHOT_TTL_MS, however long ago the record itself was written. With several, the latest word
of a live one is taken.

The script reads the vouchers from the record's first field with a pattern, without parsing
JSON: the writer always puts them first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from contract.keys import key_tag
from contract.packed_script import PackedScript
from contract.records import AS_OF, HEAD_LUA_VOUCHER, ORDER, VOUCHER, MalformedRecord, decode_record
from contract.redis_client import queue_script

# The rule in Lua, for every script that reads records: ``heard_of(record)``, the latest word
# (epoch ms) of a live voucher the record names, or false; ``vouched(key)``, a key's record and
# that word, or false, false. One voucher (the usual case) costs one GET.
VOUCHED_LUA = (
    f"""
local VOUCHERS = '{HEAD_LUA_VOUCHER}'"""
    + """
local function heard_of(record)
  local named = string.match(record, VOUCHERS)
  if not named then return false end
  if not string.find(named, ' ', 1, true) then return redis.call('GET', named) end
  local latest, best = false, -1
  for voucher in string.gmatch(named, '%S+') do
    local word = redis.call('GET', voucher)
    local ms = word and tonumber(word)
    if ms and ms > best then latest, best = word, ms end
  end
  return latest
end
local function vouched(key)
  local record = redis.call('GET', key)
  local heard = false
  if record then
    heard = heard_of(record)
    if not heard then record = false end
  end
  return record, heard
end
"""
)
# For each key: the record and its voucher's last word, or false, false.
READ_SCRIPT = (
    VOUCHED_LUA
    + """
local out = {}
for i, key in ipairs(KEYS) do
  out[2 * i - 1], out[2 * i] = vouched(key)
end
return out
"""
)


class CurrentReader:
    """Reads the servable records of keys: one script a bucket (a script's keys share a slot:
    contract.keys), all in one round trip (EVALSHA; loaded on first use).

    Within a bucket the records are read at one instant; across buckets (several scripts) each
    bucket's at its own (README "Redis Cluster")."""

    def __init__(self, client: redis.Redis, script: str = READ_SCRIPT) -> None:
        """``script``: READ_SCRIPT, or one that answers the same pairs its own way."""
        self._client = client
        self._script = client.register_script(script)
        self._call = PackedScript(client, self._script)  # one bucket: the common read, made lean

    def __call__(self, keys: Sequence[str]) -> list[Any]:
        """The raw (record, heard) pairs, flattened in the order of ``keys``: decode each pair
        with ``servable``."""
        groups = _by_tag(keys)
        if len(groups) <= 1:
            return list(self._call(keys)) if keys else []
        pipe = self._client.pipeline(transaction=False)
        collect = self.queue(keys, pipe)
        return collect(pipe.execute())

    def queue(self, keys: Sequence[str], pipe: Any) -> Callable[[Sequence[Any]], list[Any]]:
        """Queue the reads on a pipeline; returns what turns the pipeline's replies (from the
        first of these on: ``collect.count`` of them) into ``__call__``'s answer."""
        groups = _by_tag(keys)
        for indices in groups:
            queue_script(pipe, self._script, [keys[i] for i in indices])

        def collect(replies: Sequence[Any]) -> list[Any]:
            if len(groups) == 1:
                return list(replies[0])
            flat: list[Any] = [None] * (2 * len(keys))
            for indices, reply in zip(groups, replies, strict=False):
                for j, i in enumerate(indices):
                    flat[2 * i], flat[2 * i + 1] = reply[2 * j], reply[2 * j + 1]
            return flat

        collect.count = len(groups)  # type: ignore[attr-defined]
        return collect


def _by_tag(keys: Sequence[str]) -> list[list[int]]:
    """The positions of ``keys``, grouped by hash tag (contract.keys.key_tag), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key_tag(key), []).append(i)
    return list(groups.values())


def servable(raw: Any, heard: Any) -> dict[str, Any] | None:
    """The record to serve from one (record, heard) pair, or None if there is none.

    ``as_of`` becomes the later of the record's and its connections' latest word; the vouchers
    and the order are not served. Raises MalformedRecord if what is stored is not a record.
    """
    if raw is None or heard is None:
        return None
    record = decode_record(raw)
    try:
        heard_ms = int(heard)
    except ValueError:
        raise MalformedRecord(f"voucher {record.get(VOUCHER)!r} holds no time") from None
    record.pop(VOUCHER, None)
    record.pop(ORDER, None)
    record[AS_OF] = max(record[AS_OF], heard_ms)
    return record


def latest_word(words: Sequence[Any]) -> Any:
    """The latest of the words read from a record's vouchers (None where one is gone), as the
    script's ``heard_of`` takes it: None if none is alive."""
    latest, best = None, -1
    for word in words:
        if word is not None:
            try:
                ms = int(word)
            except ValueError:
                continue
            if ms > best:
                latest, best = word, ms
    return latest


def pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The script's flat reply as (record, heard) pairs, in the order of the keys."""
    return list(zip(flat[0::2], flat[1::2], strict=True))
