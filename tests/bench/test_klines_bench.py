"""The candles benchmark measures what it says: its data is what the messenger keeps, the server
answers exactly the bytes the bare app is given, and its calls are told apart by their parameters."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import redis

from bench.bare_klines import KEY
from bench.kline_weight import call_kind, caught_up
from bench.klines import PATH, candles, fill
from contract.keys import symbol_tag, voucher_key
from contract.klines import klines_key
from server import create_app


def test_candles_look_like_binances_rows_and_follow_each_other() -> None:
    rows = candles(1000, "1m", 1_700_000_040_000)
    assert [r[0] for r in rows] == [1_700_000_040_000 - (999 - i) * 60_000 for i in range(1000)]
    for row in rows:
        assert row[6] == row[0] + 59_999
        assert all(
            isinstance(row[i], str) and len(row[i].split(".")[1]) == 8 for i in (1, 2, 3, 4, 5, 7, 9, 10)
        )
        o, h, low, c = (Decimal(row[i]) for i in (1, 2, 3, 4))
        assert low <= min(o, c) <= max(o, c) <= h
        assert Decimal(row[9]) <= Decimal(row[5])
    assert all(a[4] == b[1] for a, b in pairwise(rows))  # each opens at the last close


def test_the_server_answers_exactly_the_bytes_the_bare_app_serves(fake_redis: redis.Redis) -> None:
    answer = fill(fake_redis)
    assert fake_redis.zcard(klines_key("1m", "BTCUSDT")) == 999  # written through the contract's script
    assert fake_redis.get(KEY) == answer
    response = create_app({}, client=fake_redis).test_client().get(PATH)
    assert response.status_code == 200
    assert response.data == answer
    assert response.data.count(b"],[") == 999  # 1,000 rows


def test_a_series_is_caught_up_only_up_to_its_vouched_open_candle(fake_redis: redis.Redis) -> None:
    fill(fake_redis)
    assert caught_up(fake_redis, ["BTCUSDT"], "1m") == 1
    assert (
        caught_up(
            fake_redis, ["BTCUSDT"], "1m", not_vouched_by=voucher_key("bench", 1, symbol_tag("BTCUSDT"))
        )
        == 0
    )
    fake_redis.zpopmax(klines_key("1m", "BTCUSDT"))  # the last closed candle missing: a gap
    assert caught_up(fake_redis, ["BTCUSDT", "ETHBTC"], "1m") == 0


def test_candle_calls_are_told_apart_by_their_parameters() -> None:
    base = "/api/v3/klines?symbol=BTCUSDT&interval=1m"
    assert call_kind(f"{base}&limit=1") == "seed"
    assert call_kind(f"{base}&limit=1000") == "history"
    assert call_kind(base) == "history"
    assert call_kind(f"{base}&startTime=1700000000000&limit=1000") == "gap"
    assert call_kind(f"{base}&endTime=1700000000000&limit=1000") == "older"
