"""Candles through the three most used Python clients, unmodified but for their base URL, against
the whole stack on the simulator; every closed candle checked against the exchange's own answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import ccxt
import pytest
from binance.client import Client
from binance.spot import Spot

from tests.processes import Gunicorn, Messenger, Simulator, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]
MINUTE = 60_000


def exchange_rows(sim: Simulator, **params: Any) -> list[list[Any]]:
    status, _, body = http("GET", f"{sim.rest_url}/api/v3/klines?{urlencode(params)}")
    assert status == 200, body
    rows: list[list[Any]] = body
    return rows


def closed(rows: list[list[Any]]) -> list[list[Any]]:
    """The rows of candles closed a while ago (the open one moves between two reads)."""
    now = int(time.time() * 1000)
    return [r for r in rows if int(r[6]) < now - 2000]


def eventually(call: Callable[[], Any], what: str) -> Any:
    """A client's answer once the stack has it (a first request streams and seeds the series)."""
    answers: list[Any] = []

    def answered() -> bool:
        try:
            answers.append(call())
        except Exception as exc:  # each client raises its own kind on a 503
            answers.append(exc)
            return False
        return True

    try:
        wait_until(answered, 15, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: the last answer was {answers[-1] if answers else None!r}") from None
    return answers[-1]


@pytest.fixture
def stack(sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any) -> str:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    return gunicorn.url


def test_binance_connector_klines_and_ui_klines(stack: str, sim: Simulator) -> None:
    client = Spot(base_url=stack)
    rows = eventually(lambda: client.klines("ETHBTC", "1m", limit=1000), "connector klines")
    assert len(rows) == 1000
    theirs = {r[0]: r for r in exchange_rows(sim, symbol="ETHBTC", interval="1m", limit=1000)}
    assert all(r == theirs[r[0]] for r in closed(rows))
    ui = client.ui_klines("ETHBTC", "1m", limit=10)
    assert [r[0] for r in ui] == [r[0] for r in rows[-10:]]


def test_ccxt_fetch_ohlcv_with_since_and_limit(stack: str, sim: Simulator) -> None:
    exchange = ccxt.binance({"enableRateLimit": False, "options": {"fetchMarkets": {"types": ["spot"]}}})
    exchange.urls["api"]["public"] = f"{stack}/api/v3"
    since = int(time.time() * 1000) // MINUTE * MINUTE - 500 * MINUTE
    candles = eventually(lambda: exchange.fetch_ohlcv("BNB/BTC", "1m", since=since, limit=1000), "ccxt ohlcv")
    assert candles[0][0] == since
    assert len(candles) == 501  # 500 closed since then, and the open one
    theirs = {
        r[0]: r for r in exchange_rows(sim, symbol="BNBBTC", interval="1m", startTime=since, limit=1000)
    }
    for t, o, h, low, c, v in candles[:-1]:
        row = theirs[t]
        assert (o, h, low, c, v) == tuple(float(x) for x in row[1:6])
    latest = exchange.fetch_ohlcv("BNB/BTC", "1m", limit=1000)
    assert len(latest) == 1000


def test_python_binance_klines_and_historical_klines_older_than_kept(stack: str, sim: Simulator) -> None:
    client = Client(ping=False)
    client.API_URL = f"{stack}/api"
    rows = eventually(lambda: client.get_klines(symbol="BTCUSDT", interval="1h", limit=1000), "get_klines")
    listed = exchange_rows(sim, symbol="BTCUSDT", interval="1h", limit=1000)
    assert len(rows) == len(listed) > 800  # all the hours since the symbol's first trade
    theirs = {r[0]: r for r in listed}
    assert all(r == theirs[r[0]] for r in closed(rows))
    # Older than the 1,000 kept: 30 to 28 days ago on 1m candles (kept: the last 999 minutes).
    now = int(time.time() * 1000)
    start, end = now - 30 * 24 * 3_600_000, now - 28 * 24 * 3_600_000
    history = eventually(
        lambda: client.get_historical_klines("BTCUSDT", "1m", start, end), "get_historical_klines"
    )
    assert len(history) == (end - start) // MINUTE
    page = exchange_rows(sim, symbol="BTCUSDT", interval="1m", startTime=history[0][0], limit=1000)
    assert history[:1000] == page
