"""Trades through the three most used Python clients, unmodified but for the base URL: ccxt
``fetch_trades``, python-binance ``get_aggregate_trades``, binance-connector ``agg_trades`` and
``historical_trades``; every answer is the simulator's own data for the same ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import ccxt
import pytest
from binance.client import Client
from binance.error import ClientError, ServerError
from binance.exceptions import BinanceAPIException
from binance.spot import Spot

from tests.processes import Gunicorn, Messenger, Simulator, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]


def the_exchanges(sim: Simulator, path: str, symbol: str, first: int, count: int) -> list[dict[str, Any]]:
    """The simulator's own answer for ``count`` items from id ``first``."""
    _, _, body = http(
        "GET", f"{sim.rest_url}{path}?{urlencode({'symbol': symbol, 'fromId': first, 'limit': count})}"
    )
    items: list[dict[str, Any]] = body
    return items


def eventually(call: Callable[[], Any]) -> Any:
    """The client's answer once the symbol is streamed and its list kept (a first call may be 503)."""
    answers: list[Any] = []

    def answered() -> bool:
        try:
            answers.append(call())
        except (ccxt.ExchangeNotAvailable, ccxt.ExchangeError, BinanceAPIException, ClientError, ServerError):
            return False
        return True

    wait_until(answered, 15, interval_s=0.2, what="a client's answer")
    return answers[-1]


@pytest.fixture
def stack(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> Simulator:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    return sim


def test_ccxt_fetch_trades(stack: Simulator, gunicorn: Gunicorn) -> None:
    exchange = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}, "timeout": 20_000})
    exchange.urls["api"]["public"] = f"{gunicorn.url}/api/v3"
    exchange.load_markets()
    trades = eventually(lambda: exchange.fetch_trades("ETH/BTC", limit=100))
    assert len(trades) == 100
    first = int(trades[0]["id"])
    assert [t["info"] for t in trades] == the_exchanges(stack, "/api/v3/aggTrades", "ETHBTC", first, 100)
    assert [t["price"] for t in trades] == [float(t["info"]["p"]) for t in trades]
    since = trades[10]["timestamp"]  # ccxt asks for the hour from ``since`` (startTime, endTime)
    later = eventually(lambda: exchange.fetch_trades("ETH/BTC", since=since, limit=20))
    assert [t["info"] for t in later] == [t["info"] for t in trades if t["timestamp"] >= since][:20]


def test_python_binance_get_aggregate_trades(stack: Simulator, gunicorn: Gunicorn) -> None:
    client = Client(ping=False)
    client.API_URL = f"{gunicorn.url}/api"  # the base URL, as python-binance spells it
    recent = eventually(lambda: client.get_aggregate_trades(symbol="BNBBTC", limit=500))
    assert recent == the_exchanges(stack, "/api/v3/aggTrades", "BNBBTC", recent[0]["a"], 500)
    older = eventually(lambda: client.get_aggregate_trades(symbol="BNBBTC", fromId=recent[0]["a"] - 1500))
    assert older == the_exchanges(stack, "/api/v3/aggTrades", "BNBBTC", recent[0]["a"] - 1500, 500)


def test_binance_connector_agg_trades_and_historical_trades(stack: Simulator, gunicorn: Gunicorn) -> None:
    client = Spot(base_url=gunicorn.url, timeout=10)
    recent = eventually(lambda: client.agg_trades("LTCBTC", limit=50))
    assert recent == the_exchanges(stack, "/api/v3/aggTrades", "LTCBTC", recent[0]["a"], 50)
    trades = eventually(lambda: client.historical_trades("LTCBTC", limit=50))
    assert trades == the_exchanges(stack, "/api/v3/historicalTrades", "LTCBTC", trades[0]["id"], 50)
    older = eventually(lambda: client.historical_trades("LTCBTC", fromId=trades[0]["id"] - 2000, limit=10))
    assert older == the_exchanges(stack, "/api/v3/historicalTrades", "LTCBTC", trades[0]["id"] - 2000, 10)
    with pytest.raises(ClientError) as refused:
        client.agg_trades("LTCBTC", fromId=1, startTime=1)
    assert refused.value.error_code == -1128
