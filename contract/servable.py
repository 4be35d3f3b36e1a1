"""When a stored record may be served: the one read rule, as a Redis script both sides share.

A record (contract.records) names the connection that vouches for it; that connection's
liveness key (contract.keys.voucher_key) exists only while the messenger hears from it. The
script reads each record and the liveness key it names in one round trip and returns a record
only where both exist, so what is served can never outlive its connection's last word by more
than SNAPSHOT_TTL_MS, however long ago the record itself was written.

The script reads the voucher from the record's first field with a pattern, without parsing
JSON: the writer always puts it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from contract.records import AS_OF, VOUCHER, MalformedRecord, decode_record

# The rule in Lua, for every script that reads records: a key's record and its voucher's last
# word (epoch ms), or false, false.
VOUCHED_LUA = """
local function vouched(key)
  local record = redis.call('GET', key)
  local heard = false
  if record then
    local voucher = string.match(record, '^{"voucher":"([^"]+)"')
    if voucher then heard = redis.call('GET', voucher) end
    if not heard then record = false end
  end
  return record, heard
end
"""
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
    """Reads the servable records of keys in one round trip (EVALSHA; loaded on first use)."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(READ_SCRIPT)

    def __call__(self, keys: Sequence[str], client: Any = None) -> list[Any]:
        """The raw (record, heard) pairs, flattened; with ``client`` a pipeline, queued on it.

        Decode each pair with ``servable``.
        """
        if not keys:
            return []
        result: list[Any] = self._script(keys=list(keys), client=client)
        return result


def servable(raw: Any, heard: Any) -> dict[str, Any] | None:
    """The record to serve from one (record, heard) pair, or None if there is none.

    ``as_of`` becomes the later of the record's and its connection's last word; the voucher's
    key is not served. Raises MalformedRecord if what is stored is not a record.
    """
    if raw is None or heard is None:
        return None
    record = decode_record(raw)
    try:
        heard_ms = int(heard)
    except ValueError:
        raise MalformedRecord(f"voucher {record.get(VOUCHER)!r} holds no time") from None
    record.pop(VOUCHER, None)
    record[AS_OF] = max(record[AS_OF], heard_ms)
    return record


def pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The script's flat reply as (record, heard) pairs, in the order of the keys."""
    return list(zip(flat[0::2], flat[1::2], strict=True))
