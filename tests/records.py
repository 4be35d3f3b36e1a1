"""Records stored as the messenger stores them, for tests that stand in for it."""

from __future__ import annotations

import time
from typing import Any

import redis

from contract.keys import MEMBERS_KEY, key_tag, member_key, member_streams_key, snapshot_key, voucher_key
from contract.kinds import DEPTH
from contract.members import StreamStates
from contract.order_book import book_fields, level_bytes
from contract.ordering import encode_order
from contract.records import AS_OF, ORDER, TS, VOUCHER, encode_record

RUN = "tests"


def vouched(
    client: redis.Redis, key: str, record: dict[str, Any], px: int | None = None, others: tuple[str, ...] = ()
) -> None:
    """Store ``record`` under ``key`` with a live voucher (its connection, alive for ``px`` ms),
    and ``others`` (other messengers' voucher keys, set by the caller) named after it."""
    voucher = voucher_key(RUN, int(record.get("connection", 1)), key_tag(key))
    client.set(voucher, int(record[AS_OF]), px=px)
    client.set(key, encode_record({VOUCHER: " ".join((voucher, *others)), ORDER: "", **record}))


def book_levels(n: int, side: int, first: int = 10_000, step: int = 1) -> list[bytes]:
    """``n`` levels of one side (0 bids, descending; 1 asks, ascending), as contract.order_book
    stores them: prices in 0.01 ticks with 8 decimals, quantities that differ level by level."""
    sign = -1 if side == 0 else 1
    levels = []
    for i in range(n):
        cents = first + side + sign * i * step
        levels.append(level_bytes(f"{cents // 100}.{cents % 100:02d}000000", f"{i % 97 + 1}.{i:08d}"))
    return levels


def put_book(
    client: redis.Redis,
    symbol: str,
    bids: list[bytes],
    asks: list[bytes],
    levels: int = 100,
    limit: int = 1000,
    partial: tuple[bool, bool] = (False, False),
    update_id: int = 160,
    as_of_ms: int | None = None,
    px: int | None = None,
    connection: int = 1,
    others: tuple[str, ...] = (),
) -> bytes:
    """Store a book record as the messenger's writer does (voucher, fields, ts, as_of, source,
    connection) with a live voucher, and ``others`` (other messengers' voucher keys) named after
    it; returns the stored bytes."""
    now = int(time.time() * 1000) if as_of_ms is None else as_of_ms
    key = snapshot_key(DEPTH, symbol)
    voucher = voucher_key(RUN, connection, key_tag(key))
    fields = book_fields(symbol, update_id, levels, limit, bids, asks, partial)
    record = {
        VOUCHER: " ".join((voucher, *others)),
        ORDER: encode_order((update_id, levels, len(bids) + len(asks))),
        **fields,
        TS: now - 5,
        AS_OF: now,
        "source": "stream",
        "connection": connection,
    }
    raw = encode_record(record)
    client.set(voucher, now, px=px)
    client.set(key, raw)
    return raw


def member(client: redis.Redis, name: str = RUN) -> None:
    """Register a member (contract.members) that stays live for an hour."""
    client.zadd(MEMBERS_KEY, {name: int(time.time() * 1000) + 3_600_000})


def stream_state(client: redis.Redis, key: str, state: str, name: str = RUN) -> None:
    """Say, as a live member, that ``key`` is streamed (``pending`` or ``live``)."""
    member(client, name)
    client.hset(member_streams_key(name), key, state)


def heartbeat(client: redis.Redis, beat: bytes, px: int | None = None, name: str = RUN) -> None:
    """Write a live member's heartbeat (its JSON)."""
    member(client, name)
    client.set(member_key(name), beat, px=px)


def streamed_state(client: redis.Redis, key: str) -> str | None:
    """The state of ``key`` over every live member, as the server reads it."""
    (state,) = StreamStates(client).states([key])
    return state.decode() if isinstance(state, bytes) else state
