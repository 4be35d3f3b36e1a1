"""The kept-candles layout: the write script keeps the set contiguous whatever it is asked to do."""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis

from contract.klines import (
    HISTORY_TTL_MS,
    WRITE_SCRIPT,
    encode_row,
    klines_key,
    origin_key,
    row_times,
    write_keys,
)

MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE


def row(n: int) -> list[Any]:
    """The n-th one-minute candle from T0."""
    start = T0 + n * MINUTE
    price = f"{100 + n}.00000000"
    return [start, price, price, price, price, "1.00000000", start + MINUTE - 1, price, 1, "0.5", "50", "0"]


def write(client: redis.Redis, mode: str, rows: list[list[Any]], keep: int = 5, cap: int = 8) -> int:
    args: list[Any] = [mode, keep, cap, HISTORY_TTL_MS]
    for r in rows:
        args += [r[0], encode_row(r)]
    result: int = client.eval(WRITE_SCRIPT, 3, *write_keys("1m", "BTCUSDT"), *args)
    return result


def kept(client: redis.Redis) -> list[int]:
    return [row_times(m)[0] for m in client.zrange(klines_key("1m", "BTCUSDT"), 0, -1)]


def opens(*ns: int) -> list[int]:
    return [T0 + n * MINUTE for n in ns]


@pytest.mark.redis
def test_appending_slides_the_window_and_skips_what_is_kept(real_redis: redis.Redis) -> None:
    assert write(real_redis, "append", [row(0)]) == -1  # nothing to append to: seed first
    assert write(real_redis, "seed", [row(n) for n in range(3)]) == 3
    assert write(real_redis, "append", [row(1), row(2), row(3), row(4)]) == 5
    assert write(real_redis, "append", [row(5), row(6)]) == 5  # keep: 5
    assert kept(real_redis) == opens(2, 3, 4, 5, 6)
    assert real_redis.pttl(klines_key("1m", "BTCUSDT")) > HISTORY_TTL_MS - 10_000


@pytest.mark.redis
def test_a_write_that_would_leave_a_hole_is_refused_and_changes_nothing(real_redis: redis.Redis) -> None:
    write(real_redis, "seed", [row(n) for n in range(3)])
    assert write(real_redis, "append", [row(4)]) == -2
    assert write(real_redis, "append", [row(3), row(5)]) == -2  # the whole batch, not half of it
    assert kept(real_redis) == opens(0, 1, 2)
    assert write(real_redis, "prepend", [row(-3)]) == -2
    assert kept(real_redis) == opens(0, 1, 2)


@pytest.mark.redis
def test_prepending_grows_to_the_cap_and_marks_the_origin(real_redis: redis.Redis) -> None:
    write(real_redis, "seed", [row(n) for n in range(3)])
    assert write(real_redis, "prepend", [row(-2), row(-1), row(0)]) == 5
    assert not real_redis.exists(origin_key("1m", "BTCUSDT"))
    assert write(real_redis, "prepend", [row(-5), row(-4), row(-3)], cap=7) == -3
    assert write(real_redis, "prepend-origin", [row(-4), row(-3)]) == 7
    assert real_redis.exists(origin_key("1m", "BTCUSDT"))
    assert kept(real_redis) == opens(-4, -3, -2, -1, 0, 1, 2)
    # A grown window slides at its size; sliding drops the oldest, and with it the origin mark.
    assert write(real_redis, "append", [row(3)]) == 7
    assert not real_redis.exists(origin_key("1m", "BTCUSDT"))


@pytest.mark.redis
def test_random_writes_never_leave_a_hole(real_redis: redis.Redis) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    write(real_redis, "seed", [row(n) for n in range(10, 13)], keep=20, cap=40)
    for _ in range(300):
        a = rng.randrange(-20, 40)
        rows = [row(n) for n in range(a, a + rng.randrange(1, 4))]
        write(real_redis, rng.choice(["append", "prepend"]), rows, keep=20, cap=40)
        got = kept(real_redis)
        assert got == list(range(got[0], got[-1] + 1, MINUTE)), f"seed {seed}"
