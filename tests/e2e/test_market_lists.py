"""Whole-market ticker lists through the real processes: the simulator's ~1,260 trading symbols,
brought up on the first request within Binance's connection limits, equal to the exchange's own
values, 503 (never partial) once the messenger dies, and released when nobody asks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from contract.keys import DEMAND_KEY, SYMBOLS_KEY
from tests.e2e.test_symbols import subscribed
from tests.processes import Gunicorn, Messenger, Simulator, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]
BOOK_TICKERS = "/api/v3/ticker/bookTicker"


def trading(client: Any) -> list[str]:
    statuses: Any = client.hgetall(SYMBOLS_KEY)
    return sorted(s.decode() for s, status in statuses.items() if status == b"TRADING")


def whole(gunicorn: Gunicorn, path: str) -> Any:
    """The list once it is served (200), else None; never a partial one."""
    status, headers, body = http("GET", f"{gunicorn.url}{path}", timeout_s=10)
    assert headers.get("X-MBX-USED-WEIGHT-1M") == "0"
    if status == 503:
        assert body["code"] == -1001 and headers["Retry-After"] == "1", body
        return None
    assert status == 200, (status, body)
    return body


@pytest.fixture
def quiet_sim(sim_factory: Callable[..., Simulator]) -> Simulator:
    """A simulator whose every symbol moves once a second: ~1,260 updates a second in all."""
    return sim_factory("--rate", "1")


def test_the_whole_market_is_served_once_its_streams_are_up_and_equals_the_exchanges_values(
    quiet_sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim = quiet_sim
    messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=60)
    symbol_list_loaded(real_redis)
    symbols = trading(real_redis)
    assert len(symbols) > 1200  # the recorded exchangeInfo's trading symbols
    started = time.monotonic()
    books = wait_until(lambda: whole(gunicorn, BOOK_TICKERS), 30, interval_s=0.2, what="the whole list")
    took_s = time.monotonic() - started
    assert [b["symbol"] for b in books] == symbols
    print(f"whole bookTicker list of {len(symbols)} symbols served {took_s:.1f} s after the first request")

    # Binance's limits held: at most 1,024 streams a connection, no connection closed for its
    # messages; the market on connections of its own, the pinned stream (also in it) carried once.
    state = sim.state()
    assert state["rejected_connections"] == 0
    assert all(not s["violations"] for s in state["sessions"] + state["closed"])
    assert sorted(len(s["streams"]) for s in state["sessions"]) == [1, len(symbols) - 1025, 1024]
    assert [s["streams"] for s in state["sessions"] if len(s["streams"]) == 1] == [["btcusdt@bookTicker"]]

    timings = []
    for _ in range(20):
        sent = time.monotonic()
        assert len(whole(gunicorn, BOOK_TICKERS)) == len(symbols)
        timings.append(time.monotonic() - sent)
    median_ms, worst_ms = sorted(timings)[10] * 1000, max(timings) * 1000
    print(f"the whole list, once up: median {median_ms:.1f} ms, worst {worst_ms:.1f} ms (HTTP, 20 requests)")

    # The market goes quiet: every value ours equals the exchange's own, whatever was in flight.
    sim.market(quiet=symbols)

    def equal_to_the_exchange() -> bool:
        ours = whole(gunicorn, BOOK_TICKERS)
        theirs = http("GET", f"{sim.rest_url}{BOOK_TICKERS}")[2]
        return ours is not None and ours == sorted(theirs, key=lambda b: b["symbol"])

    wait_until(equal_to_the_exchange, 10, interval_s=0.3, what="our list to equal the exchange's")

    prices = wait_until(lambda: whole(gunicorn, "/api/v3/ticker/price"), 30, interval_s=0.2, what="prices")
    full = whole(gunicorn, "/api/v3/ticker/24hr")
    theirs = {t["symbol"]: t for t in http("GET", f"{sim.rest_url}/api/v3/ticker/24hr")[2]}
    assert [p["symbol"] for p in prices] == [t["symbol"] for t in full] == symbols
    assert all(p["price"] == theirs[p["symbol"]]["lastPrice"] for p in prices)
    moving = {"openTime", "closeTime"}  # the window moves with the clock
    assert all({k: v for k, v in t.items() if k not in moving} ==
               {k: v for k, v in theirs[t["symbol"]].items() if k not in moving} for t in full)  # fmt: skip
    assert set(real_redis.zrange(DEMAND_KEY, 0, -1)) == {b"bookticker:*", b"ticker:*"}


def test_the_list_is_503_within_a_second_of_the_messenger_dying_and_the_demand_goes_when_idle(
    quiet_sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim = quiet_sim
    messenger = messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=3)
    symbol_list_loaded(real_redis)
    wait_until(lambda: whole(gunicorn, BOOK_TICKERS), 30, interval_s=0.2, what="the whole list")
    on_demand = len(trading(real_redis))
    assert len(subscribed(sim)) == on_demand  # btcusdt's stream is both pinned and in the market

    # Nobody asks any more: the whole market's streams go DEMAND_IDLE_S later, and their connections.
    wait_until(lambda: subscribed(sim) == {"btcusdt@bookTicker"}, 15, interval_s=0.2, what="idle release")
    assert len(sim.sessions()) == 1
    assert real_redis.zscore(DEMAND_KEY, "bookticker:*") is None
    # Asked again: brought up again, and whole (the first request waits up to DEMAND_WAIT_MS).
    again = wait_until(lambda: whole(gunicorn, BOOK_TICKERS), 30, interval_s=0.2, what="the list again")
    assert len(again) == on_demand

    messenger.kill()
    killed = time.monotonic()
    wait_until(lambda: whole(gunicorn, BOOK_TICKERS) is None, 5, interval_s=0.05, what="503")
    assert time.monotonic() - killed < 2.0  # SNAPSHOT_TTL_MS (1 s) and a request's time
    started = time.monotonic()
    status, _, body = http("GET", f"{gunicorn.url}{BOOK_TICKERS}")
    assert (status, body["code"]) == (503, -1001)
    assert "not live" in body["msg"]
    assert time.monotonic() - started < 1.0  # stale: answered at once, not after DEMAND_WAIT_MS


def test_a_rolling_window_is_streamed_on_demand_and_equals_the_exchanges(
    quiet_sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim = quiet_sim
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    path = "/api/v3/ticker?symbol=ETHBTC&windowSize=4h"
    wait_until(lambda: http("GET", f"{gunicorn.url}{path}")[0] == 200, 10, what="the 4h window")
    assert "ethbtc@ticker_4h" in subscribed(sim)
    # Seeded over REST first, then the stream's own pushes (every second) take over.
    wait_until(lambda: gunicorn.snapshot("ETH_BTC/ticker_4h")[1].get("source") == "stream", 5, what="a push")
    sim.market(quiet=["ETHBTC"])
    moving = {"openTime", "closeTime"}

    def equal() -> bool:
        ours = http("GET", f"{gunicorn.url}{path}")[2]
        theirs = http("GET", f"{sim.rest_url}{path}")[2]
        return {k: v for k, v in ours.items() if k not in moving} == {
            k: v for k, v in theirs.items() if k not in moving
        }

    wait_until(equal, 5, 0.2, what="our 4h window to equal the exchange's")
