"""The record format: what the messenger writes under a snapshot key and the server serves.

A record is one JSON object. Prices and quantities are the exact strings Binance sent.
Two timestamps say how current it is (epoch milliseconds, the messenger's clock):

- ``ts``: when the value last changed (received from the stream, or fetched over REST);
- ``as_of``: up to when it is known to be current: the last time the connection that
  carries it was heard from. A quiet symbol's ``ts`` stays old while ``as_of`` moves on.

``source`` says where the value came from (``stream``, or ``rest`` for a seed), ``connection``
which of the messenger's connections vouches for it.

In Redis a record starts with ``voucher``: the keys of the connections that vouch for it
(contract.keys.voucher_key), separated by spaces; at most one per messenger, usually one in all.
The server serves a record while any of them exists, and takes ``as_of`` as the later of the
record's and the latest live connection's last word (the key's value): so a quiet value stays
servable without being rewritten, and stops being servable within SNAPSHOT_TTL_MS of the death
of the last connection or messenger that vouches for it. Several messengers writing one key
(replicas of a stream) each add their own voucher to the record (messenger.conditional).

Next comes ``order``: the order of the value (contract.ordering), so that a write older than the
stored value is refused in Redis, whichever messenger sends it. ``voucher`` and ``order`` are
read by Redis scripts without parsing JSON (HEAD_LUA), and neither is served.

Example (bookTicker)::

    {"voucher": "transmute:voucher:5f3a9c1e:1 transmute:voucher:77b0d2a4:3",
     "order": "00000000000400900217",
     "symbol": "BTCUSDT", "bid_price": "25.35190000", "bid_quantity": "31.21000000",
     "ask_price": "25.36520000", "ask_quantity": "40.66000000", "update_id": 400900217,
     "ts": 1700000000123, "as_of": 1700000000456, "source": "stream", "connection": 1}
"""

from __future__ import annotations

from typing import Any

import orjson

TS = "ts"
AS_OF = "as_of"
VOUCHER = "voucher"  # always the first field, so that Redis can read it without parsing JSON
ORDER = "order"  # always the second field (contract.ordering)
VOUCHER_SEPARATOR = " "
# A Lua pattern of a record's head: its vouchers (space-separated keys) and its order (digits, or
# empty). A record written before orders were (no ``order``) matches HEAD_LUA_VOUCHER only.
HEAD_LUA = '^{"voucher":"([^"]*)","order":"(%d*)"'
HEAD_LUA_VOUCHER = '^{"voucher":"([^"]*)"'
# The same head as plain strings, for scripts on the hot path: a plain find costs Redis a fraction
# of a pattern match. A record starts with VOUCHERS_START; ORDER_START follows its vouchers' quote.
VOUCHERS_START = '{"voucher":"'
ORDER_START = '","order":"'
SOURCE_STREAM = "stream"
SOURCE_REST = "rest"


class MalformedRecord(ValueError):
    """What is stored under a snapshot key is not a record."""


def encode_record(record: dict[str, Any]) -> bytes:
    """Serialize a record for Redis."""
    return orjson.dumps(record)


def vouchers(named: str) -> list[str]:
    """The voucher keys a record's ``voucher`` field names."""
    return named.split(VOUCHER_SEPARATOR) if named else []


def decode_record(raw: bytes | str) -> dict[str, Any]:
    """Parse a stored record; raise MalformedRecord if it is not one."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(str(exc)) from None
    if not isinstance(record, dict) or not isinstance(record.get(AS_OF), int):
        raise MalformedRecord("record lacks an integer 'as_of'")
    return record
