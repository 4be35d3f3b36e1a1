"""The demand reader: what users asked for, kept across a Redis that forgets it (restart, flush)."""

from __future__ import annotations

import time

import redis

from contract.keys import DEMAND_KEY
from messenger.demand import DemandReader

IDLE_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


def read(reader: DemandReader) -> dict[str, float]:
    reader._read()
    return reader.latest


def test_demand_redis_lost_comes_back_with_its_last_request_time(any_redis: redis.Redis) -> None:
    asked = now_ms() - 5000
    any_redis.zadd(DEMAND_KEY, {"bookticker:ETHBTC": asked, "trade:BNBBTC": asked + 1})
    reader = DemandReader(any_redis, IDLE_S)
    assert read(reader) == {"bookticker:ETHBTC": asked, "trade:BNBBTC": asked + 1}
    version = reader.version

    any_redis.flushall()  # what a restarted Redis without persistence holds
    assert read(reader) == {"bookticker:ETHBTC": asked, "trade:BNBBTC": asked + 1}
    assert reader.version == version  # nothing changed for the planner: no stream dropped
    assert any_redis.zscore(DEMAND_KEY, "bookticker:ETHBTC") == asked  # not now: idleness counts on


def test_demand_that_went_idle_meanwhile_is_not_restored(any_redis: redis.Redis) -> None:
    reader = DemandReader(any_redis, 2.0)
    any_redis.zadd(DEMAND_KEY, {"bookticker:ETHBTC": now_ms() - 1900, "bookticker:BTCUSDT": now_ms()})
    read(reader)
    any_redis.flushall()
    time.sleep(0.2)  # ETHBTC's last request is now over DEMAND_IDLE_S ago
    assert list(read(reader)) == ["bookticker:BTCUSDT"]
    assert any_redis.zrange(DEMAND_KEY, 0, -1) == [b"bookticker:BTCUSDT"]


def test_forgotten_demand_stays_forgotten(any_redis: redis.Redis) -> None:
    reader = DemandReader(any_redis, IDLE_S)
    any_redis.zadd(DEMAND_KEY, {"bookticker:NOPEUSDT": now_ms(), "bookticker:ETHBTC": now_ms()})
    read(reader)
    reader.forget(["bookticker:NOPEUSDT"])
    assert list(read(reader)) == ["bookticker:ETHBTC"]
    assert any_redis.zrange(DEMAND_KEY, 0, -1) == [b"bookticker:ETHBTC"]


def test_a_newer_request_written_after_the_loss_is_kept(any_redis: redis.Redis) -> None:
    reader = DemandReader(any_redis, IDLE_S)
    asked = now_ms() - 10_000
    any_redis.zadd(DEMAND_KEY, {"bookticker:ETHBTC": asked})
    read(reader)
    any_redis.flushall()
    any_redis.zadd(DEMAND_KEY, {"bookticker:BTCUSDT": now_ms()})  # the server, after the restart
    latest = read(reader)
    assert set(latest) == {"bookticker:ETHBTC", "bookticker:BTCUSDT"}
    assert latest["bookticker:ETHBTC"] == asked


def test_idle_demand_still_goes(any_redis: redis.Redis) -> None:
    reader = DemandReader(any_redis, 2.0)
    any_redis.zadd(DEMAND_KEY, {"bookticker:ETHBTC": now_ms() - 2500, "bookticker:BTCUSDT": now_ms()})
    assert list(read(reader)) == ["bookticker:BTCUSDT"]
    assert list(read(reader)) == ["bookticker:BTCUSDT"]
