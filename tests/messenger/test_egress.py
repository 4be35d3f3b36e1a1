"""One Binance budget per egress address: members that share it never overspend it together."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from messenger.egress import BACKOFF, BUDGET, TRANSIT_MS, UNREACHABLE, Egress
from messenger.rest import BinanceRest, RateLimited, RestError, request_weight
from tests.processes import free_port, wait_until


def members(client: redis.Redis, n: int, name: str = "default", **budget: Any) -> list[Egress]:
    """``n`` members on one egress (each its own Egress, as each process has)."""
    figures: dict[str, Any] = {"connections": 3, "connection_window_s": 1.0, "weight_per_minute": 100}
    figures.update(budget)
    return [Egress(client, name, **figures) for _ in range(n)]


def test_members_share_the_connection_budget_and_get_it_back_as_the_window_rolls(any_redis: Any) -> None:
    a, b = members(any_redis, 2)
    taken = [a.take_connection(), b.take_connection(), a.take_connection()]
    assert all(g.granted for g in taken)
    refused = b.take_connection()
    assert not refused.granted and refused.why == BUDGET
    assert 0 < refused.wait_s <= 1.01 + TRANSIT_MS / 1000  # held a little past the window
    assert not a.take_connection().granted  # the other member too
    time.sleep(refused.wait_s + 0.01)
    assert b.take_connection().granted
    assert b.used["connection"] >= 1


def test_another_egress_has_a_budget_of_its_own(any_redis: Any) -> None:
    [here] = members(any_redis, 1, "here")
    [there] = members(any_redis, 1, "there")
    assert all(here.take_connection().granted for _ in range(3))
    assert not here.take_connection().granted
    assert there.take_connection().granted


def test_members_share_the_rest_weight_and_a_call_heavier_than_the_budget_goes_alone(any_redis: Any) -> None:
    a, b = members(any_redis, 2, weight_per_minute=100, weight_window_s=1.0)
    assert a.take_weight(50).granted and b.take_weight(40).granted
    refused = a.take_weight(20)
    assert not refused.granted and refused.why == BUDGET and 0 < refused.wait_s <= 2.1 + TRANSIT_MS / 1000
    assert b.take_weight(10).granted  # what is left is for anyone
    time.sleep(refused.wait_s + 0.01)
    assert a.take_weight(20).granted
    [c] = members(any_redis, 1, "heavy", weight_per_minute=100, weight_window_s=1.0)
    assert c.take_weight(250).granted  # alone in an empty window
    assert not c.take_weight(1).granted


def test_the_weight_binance_reports_raises_a_window_that_holds_less(any_redis: Any) -> None:
    # As after a Redis restart: the exchange counted 80 this minute, the budget only its own 10.
    a, b = members(any_redis, 2, weight_per_minute=100)
    assert a.take_weight(10).granted
    a.observed_weight(80)
    assert a.raised == 1
    assert not b.take_weight(30).granted
    assert b.take_weight(20).granted
    b.observed_weight(50)  # less than the window holds: nothing to raise
    assert a.raised + b.raised == 1


def test_a_back_off_seen_by_one_member_holds_every_member_of_the_egress(any_redis: Any) -> None:
    a, b = members(any_redis, 2, connections=100, weight_per_minute=10_000)
    [elsewhere] = members(any_redis, 1, "elsewhere")
    a.back_off(0.5)
    held = [b.take_connection(), b.take_weight(1)]
    assert [g.why for g in held] == [BACKOFF, BACKOFF]
    assert all(0.3 < g.wait_s <= 0.5 for g in held)
    assert b.backoff_left_s() > 0.3  # known now: no round trip until it ends
    assert elsewhere.take_connection().granted
    a.back_off(0.1)  # a shorter one never shortens it
    wait_until(lambda: b.take_connection().granted, 1.0, 0.02, "the back-off ended")
    assert b.take_weight(1).granted


@pytest.mark.redis
def test_members_taking_at_once_never_overspend(real_redis: redis.Redis) -> None:
    team = members(real_redis, 6, connections=50, connection_window_s=60, weight_per_minute=1000)
    granted: list[int] = []
    weights: list[int] = []

    def member(egress: Egress) -> None:
        n = sum(egress.take_connection().granted for _ in range(30))
        w = sum(7 for _ in range(60) if egress.take_weight(7).granted)
        granted.append(n)
        weights.append(w)

    threads = [threading.Thread(target=member, args=(e,)) for e in team]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50
    assert 1000 - 7 < sum(weights) <= 1000


def test_redis_down_refuses_every_take_and_says_so() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    [egress] = members(client, 1)
    refused = [egress.take_connection(), egress.take_weight(1)]
    assert [g.why for g in refused] == [UNREACHABLE, UNREACHABLE]
    assert all(g.wait_s > 0 for g in refused)
    egress.back_off(5.0)  # not shared, but this member holds it
    assert egress.take_connection().why == BACKOFF


@pytest.mark.redis
def test_rest_calls_take_their_weight_before_they_are_sent(real_redis: Any) -> None:
    # Nothing listens at the REST URL: a call that got past the budget fails to connect instead.
    [egress] = members(real_redis, 1, weight_per_minute=60)
    rest = BinanceRest(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, egress=egress)
    with pytest.raises(RestError) as first:
        rest.get("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "500"})  # weight 25
    assert not isinstance(first.value, RateLimited)
    with pytest.raises(RestError) as second:
        rest.get("/api/v3/trades", {"symbol": "BTCUSDT"})  # 25: 50 of 60
    assert not isinstance(second.value, RateLimited)
    with pytest.raises(RateLimited) as spent:
        rest.get("/api/v3/exchangeInfo", {})  # 20: over
    assert "budget" in str(spent.value)
    assert egress.used["weight"] == 50


@pytest.mark.parametrize(
    ("path", "params", "weight"),
    [
        ("/api/v3/depth", {"symbol": "X", "limit": "1000"}, 50),
        ("/api/v3/depth", {"symbol": "X", "limit": "5000"}, 250),
        ("/api/v3/depth", {"symbol": "X"}, 5),
        ("/api/v3/exchangeInfo", {}, 20),
        ("/api/v3/ticker/bookTicker", {"symbol": "X"}, 2),
        ("/api/v3/ticker/bookTicker", {}, 4),
        ("/api/v3/ticker/24hr", {"symbols": '["A","B"]'}, 40),
        ("/api/v3/ticker/24hr", {}, 80),
        ("/api/v3/ticker", {"symbols": '["A","B","C"]', "windowSize": "1h"}, 12),
        ("/api/v3/ticker", {"symbols": ",".join(['"S"'] * 60)}, 200),
        ("/api/v3/trades", {"symbol": "X", "limit": "1"}, 25),
        ("/api/v3/aggTrades", {"symbol": "X"}, 4),
        ("/api/v3/klines", {"symbol": "X", "interval": "1m"}, 2),
        ("/api/v3/avgPrice", {"symbol": "X"}, 2),
    ],
)
def test_request_weight_is_binances(path: str, params: dict[str, str], weight: int) -> None:
    assert request_weight(path, params) == weight
