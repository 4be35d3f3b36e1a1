"""Any symbol, all symbols, on demand: through the real processes."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from contract.keys import snapshot_key, snapshot_prefix
from tests.processes import Gunicorn, Messenger, Simulator, symbol_list_loaded, wait_until
from tests.records import streamed_state

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SimFactory = Callable[..., Simulator]
MessengerFactory = Callable[..., Messenger]


def subscribed(sim: Simulator) -> set[str]:
    """Every stream any open connection is subscribed to."""
    return {stream for s in sim.sessions() for stream in s["streams"]}


def subscribe_requests(sim: Simulator) -> list[list[str]]:
    """The params of every SUBSCRIBE the exchange received (open and closed connections)."""
    state = sim.state()
    return [
        r["params"]
        for s in state["sessions"] + state["closed"]
        for r in s["requests"]
        if r["method"] == "SUBSCRIBE"
    ]


def times_subscribed(sim: Simulator, stream: str) -> int:
    """How often a stream was asked for: in a connect URL or in a SUBSCRIBE."""
    state = sim.state()
    urls = [s["path"].split("streams=")[-1].split("/") for s in state["sessions"] + state["closed"]]
    return sum(stream in url for url in urls) + sum(stream in params for params in subscribe_requests(sim))


def test_on_demand_unknown_is_404_valid_is_200_then_dropped_when_idle(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=2, MAX_STREAMS_PER_CONNECTION=1)
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == 200, 5)
    status, body = gunicorn.snapshot("NOPE_USDT")
    assert (status, body["error"]) == (404, "Unknown symbol NOPEUSDT. Did you mean ONEUSDT?")

    started = time.monotonic()
    status, body = gunicorn.snapshot("BNB_BTC")
    assert status == 200, body
    assert time.monotonic() - started < 3.0  # DEMAND_WAIT_MS
    assert body["symbol"] == "BNBBTC"
    assert "bnbbtc@bookTicker" in subscribed(sim)
    assert len(sim.sessions()) == 2  # a connection with room: the first holds its 1 stream

    wait_until(lambda: "bnbbtc@bookTicker" not in subscribed(sim), 6, what="the idle symbol to go")
    wait_until(lambda: len(sim.sessions()) == 1, 3, what="the emptied connection to close")
    assert gunicorn.snapshot("BTCUSDT")[0] == 200  # pinned: never idle
    assert streamed_state(real_redis, snapshot_key("bookticker", "bnbbtc")) is None


def test_a_symbol_in_use_is_kept(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=2)
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("ETHBTC")[0] == 200, 5)
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:  # asked for all along: never idle, never a gap
        assert gunicorn.snapshot("ETHBTC")[0] == 200
        time.sleep(0.1)
    assert "ethbtc@bookTicker" in subscribed(sim)
    assert times_subscribed(sim, "ethbtc@bookTicker") == 1


def test_50_concurrent_first_requests_make_one_subscription(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == 200, 5)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: gunicorn.snapshot("LTC_BTC"), range(50)))
    assert [status for status, _ in answers] == [200] * 50
    # Once, in one request: the connect URL of an on-demand connection (pinned ones take none).
    assert times_subscribed(sim, "ltcbtc@bookTicker") == 1
    assert {stream for s in sim.sessions() for stream in s["streams"]} == {
        "btcusdt@bookTicker",
        "ltcbtc@bookTicker",
    }


def test_a_symbol_that_is_not_trading_is_409(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == 200, 5)
    status, body = gunicorn.snapshot("BCC_BTC")  # BREAK in the recorded exchangeInfo
    assert (status, body["error"]) == (409, "BCCBTC is not trading (status BREAK).")


def test_new_listings_become_reachable_and_delistings_are_dropped_without_a_restart(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt", "ethbtc", CATALOG_REFRESH_S=1)
    wait_until(lambda: gunicorn.snapshot("ETHBTC")[0] == 200, 5)
    wait_until(lambda: gunicorn.snapshot("NEW_USDT")[0] == 404, 5, what="the symbol list to load")
    sim.control("POST", "listing", {"base": "NEW", "quote": "USDT", "status": "TRADING"})
    wait_until(lambda: gunicorn.snapshot("NEW_USDT")[0] == 200, 5, what="the new listing")

    sim.control("POST", "listing", {"base": "ETH", "quote": "BTC", "status": "HALT"})
    wait_until(lambda: gunicorn.snapshot("ETH_BTC")[0] == 409, 5, what="the halted symbol")
    assert "ethbtc@bookTicker" not in subscribed(sim)
    log = messenger.log()
    assert "now trading: NEWUSDT" in log
    assert "stopped: ETHBTC" in log
    assert "not streaming ETHBTC: not trading on the exchange" in log  # it was pinned


def test_all_streams_every_one_of_2500_symbols_within_binance_limits(
    sim_factory: SimFactory, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: redis.Redis
) -> None:
    sim = sim_factory("--rate", "0.5", "--extra-symbols", "1238")  # 1,262 recorded + 1,238 = 2,500 trading
    started = time.monotonic()
    messenger_factory(sim, "--all")
    records = snapshot_prefix("bookticker") + "*"
    wait_until(lambda: len(real_redis.keys(records)) >= 2500, 30, 0.2, what="every symbol in Redis")
    elapsed = time.monotonic() - started
    state = sim.state()
    sizes = sorted(len(s["streams"]) for s in state["sessions"])
    assert sum(sizes) == 2500
    assert max(sizes) <= 1024
    assert len(sizes) == 3
    closed = [(c["close_code"], c["close_reason"], c["violations"]) for c in state["closed"]]
    assert closed == []  # nobody was cut off for breaking a limit
    assert all(s["violations"] == [] for s in state["sessions"])
    assert state["rejected_connections"] == 0
    symbols = ["BTCUSDT", "ETHBTC", "SIM0000USDT", "SIM1237USDT", *random.sample(sorted(TRADING_SAMPLE), 5)]
    assert {s: gunicorn.snapshot(s)[0] for s in symbols} == dict.fromkeys(symbols, 200)
    assert elapsed < 20


TRADING_SAMPLE = {f"SIM{n:04d}USDT" for n in range(0, 1238, 97)} | {"BNBBTC", "LTCBTC", "NEOBTC"}
