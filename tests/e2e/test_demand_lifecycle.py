"""On-demand streams through the real processes: kept across a Redis restart while in use, and
dropped when idle even while someone watches the status page. (A ticker list without a symbol is
the use of the whole market: tests/e2e/test_market_lists.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from contract.keys import DEMAND_KEY, snapshot_key
from tests.e2e.test_symbols import subscribed, times_subscribed
from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]
ETHBTC = "ethbtc@bookTicker"


def test_a_stream_asked_for_keeps_flowing_across_a_redis_restart(
    sim: Simulator,
    messenger_factory: MessengerFactory,
    gunicorn: Gunicorn,
    redis_server: RedisServer,
    real_redis: Any,
) -> None:
    messenger = messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=60)
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("ETHBTC")[0] == 200, 5)  # streamed on demand
    asked_at = real_redis.zscore(DEMAND_KEY, "bookticker:ETHBTC")

    redis_server.stop()
    redis_server.start()  # empty: the demand the server wrote is gone
    # Nobody asks for ETHBTC again: the messenger puts back what it knew was asked, and when.
    with redis_server.client() as client:
        wait_until(lambda: client.zscore(DEMAND_KEY, "bookticker:ETHBTC") == asked_at, 10, what="demand")
        wait_until(lambda: client.get(snapshot_key("bookticker", "ethbtc")), 5, what="ETHBTC written again")
    assert ETHBTC in subscribed(sim)
    assert times_subscribed(sim, ETHBTC) == 1  # never dropped (and asked for again)
    assert gunicorn.snapshot("ETHBTC")[0] == 200
    assert "demand: restored 1 requested stream(s)" in messenger.log()


def test_an_idle_stream_goes_while_the_status_page_is_polled(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=2)
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("ETHBTC")[0] == 200, 5)
    last_asked_ms = real_redis.zscore(DEMAND_KEY, "bookticker:ETHBTC")  # by the last of those requests
    listed: set[str] = set()

    def poll_lists_until_gone() -> bool:
        status = http("GET", f"{gunicorn.url}/status.json")[2]
        listed.update(row["symbol"] for row in status["symbols"])
        return ETHBTC not in subscribed(sim)

    wait_until(poll_lists_until_gone, 8, interval_s=0.1, what="the idle stream to go")
    assert "ETHBTC" in listed  # the status page did show it while it was streamed
    assert time.time() * 1000 - last_asked_ms >= 2000  # DEMAND_IDLE_S after the last request
    assert gunicorn.snapshot("BTCUSDT")[0] == 200  # pinned: never idle
