"""The demand reader: what users asked for, kept across a Redis that forgets it (restart, flush)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from contract.keys import DEMAND_KEY
from messenger.demand import DemandReader
from tests.processes import RedisServer, free_port, wait_until

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


class FailsOnce:
    """A client whose ``method`` fails once (Redis lost in the middle of a read); the rest goes through."""

    def __init__(self, client: redis.Redis, method: str) -> None:
        self._client, self._method, self._failed = client, method, False

    def __getattr__(self, name: str) -> Any:
        if name == self._method and not self._failed:

            def fail(*args: Any, **kwargs: Any) -> Any:
                self._failed = True
                raise redis.ConnectionError("Connection lost")

            return fail
        return getattr(self._client, name)


def test_a_forget_survives_a_read_that_failed(any_redis: redis.Redis) -> None:
    any_redis.zadd(DEMAND_KEY, {"bookticker:NOPEUSDT": now_ms(), "bookticker:ETHBTC": now_ms()})
    reader = DemandReader(any_redis, IDLE_S)
    read(reader)
    reader.forget(["bookticker:NOPEUSDT"])
    reader.client = redis.Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens there
    with pytest.raises(redis.ConnectionError):
        reader._read()
    reader.client = any_redis
    assert list(read(reader)) == ["bookticker:ETHBTC"]
    assert any_redis.zrange(DEMAND_KEY, 0, -1) == [b"bookticker:ETHBTC"]


def test_a_forget_that_reached_redis_before_the_read_failed_is_not_restored(any_redis: redis.Redis) -> None:
    any_redis.zadd(DEMAND_KEY, {"bookticker:NOPEUSDT": now_ms(), "bookticker:ETHBTC": now_ms()})
    reader = DemandReader(any_redis, IDLE_S)
    read(reader)
    reader.forget(["bookticker:NOPEUSDT"])
    reader.client = FailsOnce(any_redis, "zremrangebyscore")  # type: ignore[assignment]  # after the ZREM
    with pytest.raises(redis.ConnectionError):
        reader._read()
    assert list(read(reader)) == ["bookticker:ETHBTC"]  # not put back as if Redis had lost it
    assert any_redis.zrange(DEMAND_KEY, 0, -1) == [b"bookticker:ETHBTC"]


@pytest.mark.redis
def test_idle_demand_goes_while_redis_cannot_be_read(
    redis_server: RedisServer, real_redis: redis.Redis
) -> None:
    real_redis.zadd(
        DEMAND_KEY, {"bookticker:ETHBTC": now_ms() - 500, "bookticker:BTCUSDT": now_ms() + 60_000}
    )
    reader = DemandReader(redis_server.client(), 1.0)
    reader.start()
    try:
        wait_until(lambda: len(reader.latest) == 2, 5, what="both requests read")
        version = reader.version
        redis_server.stop()
        # ETHBTC's last request is DEMAND_IDLE_S old 0.5 s from now: it goes, though no read succeeds.
        wait_until(lambda: list(reader.latest) == ["bookticker:BTCUSDT"], 6, what="idle demand dropped")
        assert reader.version > version  # what the planner plans again on
    finally:
        reader.stop()
        redis_server.start()
