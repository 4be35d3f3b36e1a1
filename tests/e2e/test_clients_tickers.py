"""The most used Python Binance clients, unmodified but for their base URL, against the full
stack on the simulator: ccxt 4.5, python-binance 1.0 and Binance's binance-connector. Values are
checked against the simulator's own (its REST answers, the market held quiet)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import ccxt
import pytest
from binance.client import Client
from binance.spot import Spot

from contract.keys import SYMBOLS_KEY
from tests.processes import Gunicorn, Messenger, Simulator, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def stack(
    sim_factory: Callable[..., Simulator],
    messenger_factory: Callable[..., Messenger],
    gunicorn: Gunicorn,
    real_redis: Any,
) -> tuple[Simulator, Gunicorn, list[str]]:
    """Simulator, messenger and server, the whole market's tickers up, then the market held quiet
    so that every value can be compared with the exchange's own."""
    sim = sim_factory("--rate", "1")
    messenger_factory(sim, "btcusdt", DEMAND_IDLE_S=120)
    symbol_list_loaded(real_redis)
    statuses: Any = real_redis.hgetall(SYMBOLS_KEY)
    trading = sorted(s.decode() for s, status in statuses.items() if status == b"TRADING")
    for path in ("/api/v3/ticker/bookTicker", "/api/v3/ticker/24hr"):
        wait_until(partial(served, f"{gunicorn.url}{path}"), 30, 0.2, what=path)
    sim.market(quiet=trading)
    return sim, gunicorn, trading


def served(url: str) -> bool:
    return http("GET", url)[0] == 200


def exchange_values(sim: Simulator, path: str) -> dict[str, dict[str, Any]]:
    """The simulator's own answer to a list request, by symbol."""
    return {entry["symbol"]: entry for entry in http("GET", f"{sim.rest_url}{path}")[2]}


def ccxt_client(base_url: str) -> Any:
    """ccxt's binance with its base URLs on Transmute (and spot markets only: Transmute is spot)."""
    exchange = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    exchange.urls["api"]["public"] = f"{base_url}/api/v3"
    exchange.urls["api"]["sapi"] = f"{base_url}/sapi/v1"
    return exchange


def test_ccxt_markets_tickers_bids_asks_and_status(stack: tuple[Simulator, Gunicorn, list[str]]) -> None:
    sim, gunicorn, trading = stack
    exchange = ccxt_client(gunicorn.url)
    markets = exchange.load_markets()
    assert markets["BTC/USDT"]["id"] == "BTCUSDT" and markets["ETH/BTC"]["active"] is True

    def settled() -> bool:  # values in flight when the market went quiet have arrived
        tickers = exchange.fetch_tickers()
        theirs = exchange_values(sim, "/api/v3/ticker/24hr")
        return all(
            t["info"]["lastPrice"] == theirs[t["info"]["symbol"]]["lastPrice"] for t in tickers.values()
        )

    wait_until(settled, 10, 0.3, what="our tickers to equal the exchange's")
    tickers = exchange.fetch_tickers()
    assert sorted(t["info"]["symbol"] for t in tickers.values()) == trading  # every trading symbol
    theirs = exchange_values(sim, "/api/v3/ticker/24hr")
    one = exchange.fetch_ticker("BTC/USDT")
    assert one["info"]["lastPrice"] == theirs["BTCUSDT"]["lastPrice"]
    assert one["last"] == float(theirs["BTCUSDT"]["lastPrice"])
    assert one["baseVolume"] == float(theirs["BTCUSDT"]["volume"])
    some = exchange.fetch_tickers(["BTC/USDT", "ETH/BTC"])
    assert set(some) == {"BTC/USDT", "ETH/BTC"}
    assert some["ETH/BTC"]["info"]["highPrice"] == theirs["ETHBTC"]["highPrice"]

    books = exchange_values(sim, "/api/v3/ticker/bookTicker")
    bids_asks = exchange.fetch_bids_asks()
    assert len(bids_asks) == len(trading)
    for symbol, ticker in bids_asks.items():
        book = books[markets[symbol]["id"]]
        assert (ticker["info"]["bidPrice"], ticker["info"]["askQty"]) == (book["bidPrice"], book["askQty"])
    assert set(exchange.fetch_bids_asks(["ETH/BTC"])) == {"ETH/BTC"}

    assert exchange.fetch_status()["status"] == "ok"


def python_binance_client(base_url: str) -> Any:
    """python-binance's Client with its base URL on Transmute (it pings it when made)."""
    transmute_client = type("TransmuteClient", (Client,), {"API_URL": f"{base_url}/api"})
    return transmute_client()


def test_python_binance_all_tickers(stack: tuple[Simulator, Gunicorn, list[str]]) -> None:
    sim, gunicorn, trading = stack
    client = python_binance_client(gunicorn.url)

    def equal() -> bool:
        prices = {p["symbol"]: p["price"] for p in client.get_all_tickers()}
        theirs = exchange_values(sim, "/api/v3/ticker/24hr")
        return sorted(prices) == trading and all(prices[s] == theirs[s]["lastPrice"] for s in trading)

    wait_until(equal, 10, 0.3, what="python-binance's prices to equal the exchange's")
    assert client.get_symbol_ticker(symbol="ETHBTC")["symbol"] == "ETHBTC"
    assert client.response.headers["X-MBX-USED-WEIGHT-1M"] == "0"


def test_binance_connector_rolling_window_ticker(stack: tuple[Simulator, Gunicorn, list[str]]) -> None:
    sim, gunicorn, _ = stack
    client = Spot(base_url=gunicorn.url)
    moving = {"openTime", "closeTime"}  # the window moves with the clock

    def same(window: str) -> bool:
        ours = client.rolling_window_ticker(symbols=["BTCUSDT", "ETHBTC"], windowSize=window)
        query = f'/api/v3/ticker?symbols=["BTCUSDT","ETHBTC"]&windowSize={window}'
        theirs = http("GET", f"{sim.rest_url}{query}")[2]
        return [{k: v for k, v in t.items() if k not in moving} for t in ours] == [
            {k: v for k, v in t.items() if k not in moving} for t in theirs
        ]

    for window in ("1h", "4h", "1d"):
        wait_until(partial(same, window), 15, 0.3, what=f"the {window} window to equal the exchange's")
    one = client.rolling_window_ticker("BTCUSDT")  # 1d by default
    assert list(one) == ["symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "openPrice",
                         "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume", "openTime",
                         "closeTime", "firstId", "lastId", "count"]  # fmt: skip
    pacing = Spot(base_url=gunicorn.url, show_limit_usage=True).rolling_window_ticker("BTCUSDT")
    assert pacing["limit_usage"] == {"x-mbx-used-weight-1m": "0"} and pacing["data"]["symbol"] == "BTCUSDT"
    with pytest.raises(Exception, match="-1130") as refused:
        client.rolling_window_ticker("BTCUSDT", windowSize="2h")
    assert "1h, 4h and 1d" in str(refused.value)
