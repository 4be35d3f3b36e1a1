"""The whole path with real processes: simulator -> messenger -> redis-server -> gunicorn -> HTTP."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

FIELDS = ("bid_price", "bid_quantity", "ask_price", "ask_quantity")


def served_update(gunicorn: Gunicorn, symbol: str, u: int) -> dict[str, Any] | None:
    """The served record once it carries update ``u``."""
    status, body = gunicorn.snapshot(symbol)
    return body if status == 200 and body["update_id"] == u else None


def test_the_values_served_are_the_values_the_exchange_sent(
    sim: Simulator, messenger_factory: Callable[..., Messenger], gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "BTC_USDT", "ethbtc")
    wait_until(lambda: sim.sessions() and gunicorn.snapshot("ETHBTC")[0] == 200, 5, what="the stream")
    sim.market(rate=0)
    for symbol, spelling in (("BTCUSDT", "BTC_USDT"), ("ETHBTC", "eth_btc")):
        sent = sim.set_book(symbol, "43210.12345678", "0.00100000", "43210.22345678", "12.50000000")
        body = wait_until(partial(served_update, gunicorn, spelling, sent["u"]), 5, what=f"{symbol} served")
        assert body["symbol"] == symbol
        assert [body[f] for f in FIELDS] == ["43210.12345678", "0.00100000", "43210.22345678", "12.50000000"]
        assert body["source"] == "stream"
        assert 0 <= body["age_ms"] < 1000
        assert body["as_of"] >= body["ts"] >= int(time.time() * 1000) - 5000


def test_random_walk_values_arrive_unchanged(
    sim: Simulator, messenger_factory: Callable[..., Messenger], gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "bnbbtc")
    wait_until(lambda: gunicorn.snapshot("BNB_BTC")[1].get("source") == "stream", 5)
    sim.market(rate=0)
    book = sim.book("BNBBTC")
    body = wait_until(lambda: served_update(gunicorn, "BNBBTC", book["u"]), 5)
    assert [body[f] for f in FIELDS] == [book["bidPrice"], book["bidQty"], book["askPrice"], book["askQty"]]


def test_after_sigkill_of_the_messenger_the_server_answers_500_within_ttl_plus_1s(
    sim: Simulator, messenger_factory: Callable[..., Messenger], gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt", SNAPSHOT_TTL_MS=1000)
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    messenger.kill()
    killed = time.monotonic()
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 500, 3)
    assert time.monotonic() - killed <= 1.0 + 1.0


def test_after_a_drop_the_messenger_reconnects_and_fresh_values_flow(
    sim: Simulator, messenger_factory: Callable[..., Messenger], gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt")
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    first = sim.sessions()[0]["id"]
    sim.fault("drop")
    wait_until(lambda: [s for s in sim.sessions() if s["id"] != first], 5, what="a new connection")
    sim.market(rate=0)
    sent = sim.set_book("BTCUSDT", "1.00000000", "2.00000000", "3.00000000", "4.00000000")
    wait_until(
        lambda: served_update(gunicorn, "BTCUSDT", sent["u"]), 5, what="a value sent after the reconnect"
    )


def test_pings_are_answered_and_no_limit_is_broken(
    sim_factory: Callable[..., Simulator], messenger_factory: Callable[..., Messenger], real_redis: Any
) -> None:
    sim = sim_factory("--rate", "2", "--ping-interval", "0.3", "--pong-timeout", "1")
    messenger_factory(sim, "btcusdt", "ethbtc", "bnbbtc")
    session = wait_until(lambda: [s for s in sim.sessions() if s["pongs_received"] >= 5], 5)[0]
    assert session["violations"] == []
    assert sim.state()["closed"] == []


def test_sigterm_stops_cleanly_and_takes_its_values_with_it(
    sim: Simulator, messenger_factory: Callable[..., Messenger], gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt")
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    messenger.signal(signal.SIGTERM)
    assert messenger.proc is not None and messenger.proc.wait(10) == 0  # within docker's stop timeout
    assert gunicorn.snapshot("BTC_USDT")[0] == 500  # no longer vouched for: gone at once
    assert "messenger: stopping" in messenger.log()


def test_the_messenger_logs_what_it_does(
    sim: Simulator, messenger_factory: Callable[..., Messenger], real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt", "ethbtc")
    log = wait_until(lambda: "frames/s" in (text := messenger.log()) and text, 5)
    assert "conn 1: connected" in log
    assert "pinned BTCUSDT, ETHBTC" in log
    assert "+2 -0 streams, 2 in all" in log
    assert "writes/s" in log


def test_a_bad_symbol_or_setting_stops_the_messenger_with_one_clear_line(
    sim: Simulator, messenger_factory: Callable[..., Messenger], redis_server: RedisServer
) -> None:
    bad_symbol = messenger_factory(sim, "BTC-USDT")
    assert bad_symbol.proc is not None and bad_symbol.proc.wait(5) == 2
    assert bad_symbol.log().strip() == "messenger: symbol contains '-'; only letters and digits are allowed"
    bad_ttl = messenger_factory(sim, "btcusdt", SNAPSHOT_TTL_MS="1s")
    assert bad_ttl.proc is not None and bad_ttl.proc.wait(5) == 2
    assert bad_ttl.log().strip() == "messenger: SNAPSHOT_TTL_MS='1s' is not a valid int"
