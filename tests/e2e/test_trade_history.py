"""Trades end to end: what /api/v3/aggTrades and /api/v3/historicalTrades answer is the exchange's own
data for the same ids; an older range is fetched once, one call per 1,000; a reconnect fetches only
what was missed; the most recent trades are never served while their stream is not vouched for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.processes import Gunicorn, Messenger, Simulator, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]
AGG = "/api/v3/aggTrades"
HISTORICAL = "/api/v3/historicalTrades"


def get(base: str, path: str, **params: Any) -> tuple[int, Any]:
    status, _, body = http("GET", f"{base}{path}?{urlencode(params)}")
    return status, body


def calls(sim: Simulator, path: str, since: float = 0.0) -> list[dict[str, Any]]:
    """The exchange's REST requests to ``path`` since ``since`` (its own log, with weights)."""
    return [r for r in sim.state()["rest_requests"] if r["path"].startswith(path + "?") and r["at"] >= since]


def ready(gunicorn: Gunicorn, path: str, timeout_s: float = 10, **params: Any) -> list[dict[str, Any]]:
    """The answer, once there is one (a first request streams the symbol and seeds its list)."""
    answers: list[Any] = []

    def answered() -> bool:
        status, body = get(gunicorn.url, path, **params)
        answers.append(body)
        return status == 200

    wait_until(answered, timeout_s, what=f"{path} {params}")
    items: list[dict[str, Any]] = answers[-1]
    return items


def the_exchanges(sim: Simulator, items: list[dict[str, Any]], path: str, symbol: str) -> None:
    """Every item is the exchange's own for its id, field for field, ids without a hole (this asks
    the exchange itself: count its calls before)."""
    assert items, "nothing to compare"
    key = "a" if path == AGG else "id"
    ids = [i[key] for i in items]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    _, theirs = get(sim.rest_url, path, symbol=symbol, fromId=ids[0], limit=len(ids))
    assert items == theirs


SYMBOL = "ETHBTC"


def test_recent_and_older_aggregate_trades_are_the_exchanges_older_ones_fetched_once(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    recent = ready(gunicorn, AGG, symbol=SYMBOL, limit=1000)
    assert len(calls(sim, AGG)) == 1  # the seed: the last 1,000 in one call
    assert len(recent) == 1000
    the_exchanges(sim, recent, AGG, SYMBOL)
    first = recent[0]["a"]

    since = time.time()
    older = ready(gunicorn, AGG, symbol=SYMBOL, fromId=first - 2500, limit=1000)
    fetched = calls(sim, AGG, since)
    assert [c["path"] for c in fetched] == [f"{AGG}?symbol={SYMBOL}&fromId={first - 2500}&limit=1000"]
    assert fetched[0]["weight"] == 4
    assert older[0]["a"] == first - 2500 and len(older) == 1000
    the_exchanges(sim, older, AGG, SYMBOL)

    since = time.time()  # 1,500 further on: half held, the rest in one more call
    further = ready(gunicorn, AGG, symbol=SYMBOL, fromId=first - 1500, limit=1000)
    assert len(calls(sim, AGG, since)) == 1
    the_exchanges(sim, further, AGG, SYMBOL)
    since = time.time()  # all held now: no call
    again = ready(gunicorn, AGG, symbol=SYMBOL, fromId=first - 2000, limit=1000)
    assert calls(sim, AGG, since) == []
    the_exchanges(sim, again, AGG, SYMBOL)

    # By time: the exchange's answer for the same window, found from what is held.
    start, end = older[10]["T"], older[500]["T"]
    by_time = ready(gunicorn, AGG, symbol=SYMBOL, startTime=start, endTime=end, limit=1000)
    _, theirs = get(sim.rest_url, AGG, symbol=SYMBOL, startTime=start, endTime=end, limit=1000)
    assert by_time == theirs


def test_older_trades_by_id_are_the_exchanges(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    recent = ready(gunicorn, "/api/v3/trades", symbol=SYMBOL, limit=1000)
    since = time.time()
    older = ready(gunicorn, HISTORICAL, symbol=SYMBOL, fromId=recent[0]["id"] - 1200, limit=100)
    fetched = calls(sim, HISTORICAL, since)
    assert len(fetched) == 1 and fetched[0]["weight"] == 25
    the_exchanges(sim, recent, HISTORICAL, SYMBOL)
    the_exchanges(sim, older, HISTORICAL, SYMBOL)


def test_a_reconnect_fetches_only_the_gap_and_recent_trades_wait_for_their_stream(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt", "--streams", "bookTicker,aggTrade", LIVENESS_TIMEOUT_MS=1500)
    recent = ready(gunicorn, AGG, symbol="BTCUSDT", limit=1000)
    assert len(calls(sim, AGG)) == 1  # seeded once, then kept by the stream

    # The connection goes quiet while trades go on (it is still subscribed); once it is declared
    # dead, the next connection is held back for 3 s (a 429 on its handshake).
    sim.fault("connect_429", count=1, retry_after_s=3)
    sim.fault("stall")
    stalled_at = time.time()
    wait_until(lambda: get(gunicorn.url, AGG, symbol="BTCUSDT", limit=10)[0] == 503, 5, what="503 once stale")
    status, _ = get(gunicorn.url, AGG, symbol="BTCUSDT", fromId=recent[-1]["a"] - 5, limit=100)
    assert status == 503  # it runs up to now: whether newer trades exist is not known
    # A range wholly in the past is history: served whatever the connection's state.
    status, past = get(gunicorn.url, AGG, symbol="BTCUSDT", fromId=recent[0]["a"], limit=500)
    assert status == 200 and past == recent[:500]

    missed_from = recent[-1]["a"]
    after = ready(gunicorn, AGG, symbol="BTCUSDT", limit=1000)
    caught_up = calls(sim, AGG, stalled_at)
    assert 1 <= len(caught_up) <= 2, caught_up
    assert all("fromId=" in c["path"] for c in caught_up), caught_up  # the gap only, never a new seed
    assert sum(c["weight"] for c in caught_up) <= 8
    assert after[-1]["a"] > missed_from
    the_exchanges(sim, after, AGG, "BTCUSDT")


@pytest.mark.parametrize(
    ("symbol", "path", "params", "most_calls"),
    [
        # The seed of the list (one call), then what the exchange says about its first trade.
        ("ETHBTC", AGG, {"fromId": 0}, 2),
        ("LTCBTC", AGG, {"startTime": 0}, 3),  # the 1,000 from that time, and the page before them
        ("BNBBTC", AGG, {"endTime": 0}, 3),
        ("NEOBTC", HISTORICAL, {"fromId": 0}, 1),  # (the seed is /api/v3/trades)
    ],
)
def test_before_the_first_trade_is_answered_as_the_exchange_answers_it_and_costs_no_call_again(
    sim: Simulator,
    messenger_factory: MessengerFactory,
    gunicorn: Gunicorn,
    real_redis: Any,
    symbol: str,
    path: str,
    params: dict[str, int],
    most_calls: int,
) -> None:
    """The simulator's first ids are well above 0 (Binance's are 0): fromId=0 and startTime=0 give
    its first trades, endTime=0 gives []; once that is known, asking again costs no REST call."""
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    _, theirs = get(sim.rest_url, path, symbol=symbol, limit=10, **params)
    _, first = get(sim.rest_url, path, symbol=symbol, fromId=0, limit=1)
    assert first[0]["a" if path == AGG else "id"] > 1000  # the case: ids below the first are missing
    since = time.time()
    answer = ready(gunicorn, path, timeout_s=5, symbol=symbol, limit=10, **params)
    assert answer == theirs
    assert 1 <= len(calls(sim, path, since)) <= most_calls
    since = time.time()
    for _ in range(3):
        assert get(gunicorn.url, path, symbol=symbol, limit=10, **params) == (200, theirs)
    assert calls(sim, path, since) == []
