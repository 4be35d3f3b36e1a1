"""The freshness guarantee under every fault, as a client of the HTTP API sees it.

Each test names the fault; each bound asserted here is a row of the README's
"Freshness guarantee" table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SimFactory = Callable[..., Simulator]
MessengerFactory = Callable[..., Messenger]


def watch(gunicorn: Gunicorn, symbols: list[str], seconds: float) -> list[tuple[float, str, int, Any]]:
    """Ask for every symbol over and over for ``seconds``: (time, symbol, status, body) of each answer."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for symbol in symbols:
            status, body = gunicorn.snapshot(symbol)
            seen.append((time.monotonic(), symbol, status, body))
        time.sleep(0.01)
    return seen


def reseeded(gunicorn: Gunicorn, symbol: str, after_ts: int) -> Any:
    """The served record once its value is newer than ``after_ts``."""
    status, body = gunicorn.snapshot(symbol)
    return body if status == 200 and body["ts"] > after_ts else None


def first_status(gunicorn: Gunicorn, symbol: str, status: int, timeout_s: float) -> float:
    """Seconds until ``symbol`` first answers ``status``."""
    started = time.monotonic()
    wait_until(lambda: gunicorn.snapshot(symbol)[0] == status, timeout_s, 0.01, what=f"{symbol} -> {status}")
    return time.monotonic() - started


def test_a_quiet_symbol_stays_servable_for_3x_the_ttl_while_its_connection_lives(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim.market(quiet=["BNBBTC"])
    messenger_factory(sim, "bnbbtc", SNAPSHOT_TTL_MS=500, LIVENESS_TIMEOUT_MS=2000)
    first = wait_until(lambda: (r := gunicorn.snapshot("BNB_BTC"))[0] == 200 and r[1], 5)
    seen = watch(gunicorn, ["BNB_BTC"], 3 * 0.5 + 0.5)
    assert {status for _, _, status, _ in seen} == {200}
    last = seen[-1][3]
    assert last["ts"] == first["ts"]  # the value never changed...
    assert last["as_of"] > first["as_of"] + 1500  # ...and is still vouched for
    assert last["age_ms"] < 2000


def test_a_stalled_connection_answers_500_within_the_liveness_timeout_plus_1s(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim.market(quiet=["BTCUSDT"])  # only pongs keep the connection alive
    messenger_factory(sim, "btcusdt", LIVENESS_TIMEOUT_MS=2000, RECONNECT_MIN_MS=3000, RECONNECT_MAX_MS=3000)
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    sim.fault("stall")
    assert first_status(gunicorn, "BTC_USDT", 500, 5) <= 2.0 + 1.0


def test_a_stalled_connection_is_replaced_and_its_symbols_come_back(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt", LIVENESS_TIMEOUT_MS=1000)
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    stalled = sim.sessions()[0]["id"]
    sim.fault("stall")
    first_status(gunicorn, "BTC_USDT", 500, 3)
    first_status(gunicorn, "BTC_USDT", 200, 5)
    assert [s["id"] for s in sim.sessions() if not s["stalled"]] != [stalled]
    assert "nothing heard for" in messenger.log()


def test_slow_pongs_inside_the_liveness_window_are_not_a_death(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim.market(quiet=["BTCUSDT"])
    messenger_factory(sim, "btcusdt", LIVENESS_TIMEOUT_MS=2000)
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    sim.fault("slow_pong", delay_s=0.8)
    assert {status for _, _, status, _ in watch(gunicorn, ["BTC_USDT"], 3)} == {200}
    assert len(sim.sessions()) == 1
    assert sim.state()["closed"] == []


def test_after_a_drop_quiet_symbols_come_back_from_rest_without_a_stream_frame(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim.market(quiet=["BNBBTC", "ETHBTC"])
    messenger_factory(sim, "bnbbtc", "ethbtc")
    wait_until(lambda: all(gunicorn.snapshot(s)[0] == 200 for s in ("BNBBTC", "ETHBTC")), 5)
    seeded = {s: gunicorn.snapshot(s)[1]["ts"] for s in ("BNBBTC", "ETHBTC")}
    first = sim.sessions()[0]["id"]
    sim.fault("drop")
    [new] = wait_until(lambda: [s for s in sim.sessions() if s["id"] != first], 5, what="a new connection")
    for symbol, ts in seeded.items():
        body = wait_until(partial(reseeded, gunicorn, symbol, ts), 5, what=f"{symbol} seeded again")
        book = sim.book(symbol)
        assert body["source"] == "rest"
        assert (body["bid_price"], body["ask_price"]) == (book["bidPrice"], book["askPrice"])
    [new] = [s for s in sim.sessions() if s["id"] == new["id"]]
    assert new["frames_sent"] == 0  # nothing came over the stream: the values are the REST seed
    bookticker_calls = [r for r in sim.state()["rest_requests"] if "bookTicker" in r["path"]]
    assert len(bookticker_calls) == 2  # one call per connect, for both symbols at once


def test_an_older_update_never_replaces_a_newer_value(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt")
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    sim.market(rate=0)
    sent = sim.set_book("BTCUSDT", "100.00000000", "1.00000000", "100.10000000", "1.00000000")
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[1]["update_id"] == sent["u"], 5)
    older = sim.fault("stale_update", symbol="BTCUSDT", back=3)["sent"]
    assert older["u"] < sent["u"]
    seen = watch(gunicorn, ["BTC_USDT"], 1.0)
    assert {body["update_id"] for _, _, _, body in seen} == {sent["u"]}
    assert {body["bid_price"] for _, _, _, body in seen} == {"100.00000000"}
    wait_until(lambda: "1 older dropped" in messenger.log(), 3)


def test_the_24h_cut_is_met_make_before_break_with_no_500(
    sim_factory: SimFactory, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim = sim_factory("--rate", "20", "--max-connection-age", "4")  # the exchange's cut, shortened
    sim.market(quiet=["BNBBTC"])
    messenger = messenger_factory(sim, "btcusdt", "bnbbtc", CONNECTION_MAX_AGE_S=1.5)
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == gunicorn.snapshot("BNBBTC")[0] == 200, 5)
    seen = watch(gunicorn, ["BTCUSDT", "BNBBTC"], 5.0)
    assert [(s, status) for _, s, status, _ in seen if status != 200] == []
    closed = sim.state()["closed"]
    assert len(closed) >= 2  # replaced at least twice in those 5 s
    assert all(c["close_reason"] == "closed by client" for c in closed)  # never cut by the exchange
    assert "make before break" in messenger.log()


def test_a_server_shutdown_announcement_is_met_make_before_break_with_no_500(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim.market(quiet=["BNBBTC"])
    messenger_factory(sim, "btcusdt", "bnbbtc")
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == gunicorn.snapshot("BNBBTC")[0] == 200, 5)
    [old] = sim.sessions()
    sim.fault("shutdown", grace_s=3)
    seen = watch(gunicorn, ["BTCUSDT", "BNBBTC"], 2.5)
    assert [(s, status) for _, s, status, _ in seen if status != 200] == []
    [closed] = sim.state()["closed"]
    assert closed["id"] == old["id"]
    assert closed["close_reason"] == "closed by client"  # before the exchange's grace ran out
    assert [s["id"] for s in sim.sessions()] != [old["id"]]


def test_redis_restart_gives_503_then_recovers_without_restarting_anything(
    sim: Simulator,
    messenger_factory: MessengerFactory,
    gunicorn: Gunicorn,
    redis_server: RedisServer,
    real_redis: Any,
) -> None:
    messenger = messenger_factory(sim, "btcusdt")
    wait_until(lambda: gunicorn.snapshot("BTC_USDT")[0] == 200, 5)
    redis_server.stop()
    try:
        status, body = gunicorn.snapshot("BTC_USDT")
        assert (status, body["status_code"]) == (503, 503)
        wait_until(lambda: "redis: write failed" in messenger.log(), 5, what="the messenger to notice")
    finally:
        redis_server.start()  # empty: it keeps nothing
    first_status(gunicorn, "BTC_USDT", 200, 5)
    assert messenger.running()


def test_a_1008_close_backs_off_longer_than_a_drop(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt", RECONNECT_MIN_MS=50, RECONNECT_MAX_MS=2000)

    def reconnect_after(fault: str, **params: Any) -> float:
        wait_until(lambda: len(sim.sessions()) == 1, 5)
        before = {s["id"] for s in sim.sessions()}
        sim.fault(fault, **params)
        started = time.monotonic()
        wait_until(lambda: {s["id"] for s in sim.sessions()} - before, 5, 0.01)
        return time.monotonic() - started

    assert reconnect_after("drop") < 0.5
    assert reconnect_after("close", code=1008, reason="Too many requests") >= 1.0  # at least half the cap


def test_rest_429_is_honoured_for_its_retry_after(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim.market(quiet=["BNBBTC"])
    sim.fault("rest_429", count=1, retry_after_s=2)
    messenger_factory(sim, "bnbbtc")
    elapsed = first_status(gunicorn, "BNBBTC", 200, 6)
    calls = sorted(r["at"] for r in sim.state()["rest_requests"] if r["path"] != "/api/v3/ping")  # ours
    # The first call got the 429; nothing at all was asked of the exchange until Retry-After passed.
    assert calls[1] - calls[0] >= 2.0
    assert elapsed >= 1.9
