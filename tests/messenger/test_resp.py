"""The writer's own command bytes are exactly what redis-py (hiredis) packs, and Redis takes them."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from contract.resp import command
from messenger.resp import set_px


@pytest.mark.parametrize(
    "args",
    [
        ("DEL", "transmute:bookticker:btcusdt", "transmute:trade:ethbtc"),
        ("PUBLISH", b"transmute:depth:btcusdt", b""),
        ("SET", "transmute:voucher:5f3a9c1e:12", 1796144202934, "PX", 1000),
        ("HSET", "transmute:streams", "k\u00e9y", "live"),  # non-ASCII text is UTF-8
        ("PEXPIRE", b"k", b"600000"),
    ],
)
def test_commands_are_packed_as_hiredis_packs_them(args: tuple[Any, ...]) -> None:
    assert command(*args) == hiredis.pack_command(args)


def test_set_px_is_the_set_command() -> None:
    value = b'{"voucher":"transmute:voucher:x:1","bid_price":"1.0\\r\\n"}'  # CRLF inside: length-prefixed
    args: tuple[Any, ...] = ("SET", b"transmute:bookticker:btcusdt", value, "PX", b"600000")
    assert set_px(b"transmute:bookticker:btcusdt", value, b"600000") == hiredis.pack_command(args)


@pytest.mark.redis
def test_redis_takes_the_bytes(real_redis: Any) -> None:
    conn = real_redis.connection_pool.get_connection()
    try:
        conn.send_packed_command([set_px(b"resp:a", b"\x00\r\n\xff", b"5000") + command("GET", "resp:a")])
        assert conn.read_response() == b"OK"
        assert conn.read_response() == b"\x00\r\n\xff"
    finally:
        real_redis.connection_pool.release(conn)
    assert 0 < real_redis.pttl("resp:a") <= 5000
