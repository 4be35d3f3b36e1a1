"""Ticker lists without a symbol: every trading symbol, whole or not at all, read in one round trip."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.keys import DEMAND_KEY, LIVE, PENDING, SYMBOLS_KEY, snapshot_key
from server import create_app
from tests.records import stream_state
from tests.server.test_binance_api import BOOK, TICKER, put

TRADING = ["BTCUSDT", "ETHBTC", "BNBBTC"]
WAIT_MS = 300


def listing(client: redis.Redis, symbols: list[str]) -> None:
    client.hset(SYMBOLS_KEY, mapping={**dict.fromkeys(symbols, "TRADING"), "BCCBTC": "BREAK"})


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    listing(fake_redis, TRADING)
    return create_app({"demand_wait_ms": WAIT_MS}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def all_there(client: redis.Redis, kind: str = "bookticker", symbols: list[str] = TRADING) -> None:
    for symbol in symbols:
        put(client, kind, symbol, **(BOOK if kind == "bookticker" else TICKER))


def demand(client: redis.Redis) -> dict[str, float]:
    rows: Any = client.zrange(DEMAND_KEY, 0, -1, withscores=True)
    return {m.decode(): s for m, s in rows}


def test_every_trading_symbol_in_symbol_order_and_none_that_does_not_trade(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    all_there(fake_redis)
    put(fake_redis, "bookticker", "BCCBTC", **BOOK)  # streamed, but not trading: not listed
    answer = client.get("/api/v3/ticker/bookTicker")
    assert answer.status_code == 200
    assert [e["symbol"] for e in answer.get_json()] == sorted(TRADING)
    assert list(answer.get_json()[0]) == ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"]
    assert answer.get_json()[0]["bidPrice"] == BOOK["bid_price"]


def test_price_and_24hr_lists_come_from_the_ticker_streams_in_binances_shapes(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    all_there(fake_redis, "ticker")
    prices = client.get("/api/v3/ticker/price").get_json()
    assert prices == [{"symbol": s, "price": TICKER["close"]} for s in sorted(TRADING)]
    full = client.get("/api/v3/ticker/24hr").get_json()
    assert list(full[0]) == [
        "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice", "lastPrice",
        "lastQty", "bidPrice", "bidQty", "askPrice", "askQty", "openPrice", "highPrice", "lowPrice",
        "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count",
    ]  # fmt: skip
    mini = client.get("/api/v3/ticker/24hr?type=MINI").get_json()
    assert list(mini[0]) == [
        "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume", "openTime",
        "closeTime", "firstId", "lastId", "count",
    ]  # fmt: skip
    assert len(full) == len(mini) == len(TRADING)


def test_a_first_list_asks_for_the_whole_market_once_and_is_503_until_every_symbol_has_a_value(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    all_there(fake_redis, symbols=TRADING[:2])  # one trading symbol has no value yet
    started = time.monotonic()
    answer = client.get("/api/v3/ticker/bookTicker")
    waited_s = time.monotonic() - started
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    body = answer.get_json()
    assert body["code"] == -1001
    assert "1 of 3 trading symbols" in body["msg"] and TRADING[2] in body["msg"]
    assert WAIT_MS / 1000 <= waited_s < WAIT_MS / 1000 + 1  # it waited for the streams to start
    assert set(demand(fake_redis)) == {"bookticker:*"}
    all_there(fake_redis, symbols=TRADING[2:])
    assert client.get("/api/v3/ticker/bookTicker").status_code == 200


def test_a_value_arriving_while_the_first_request_waits_completes_its_answer(
    app: Flask, fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    all_there(fake_redis, symbols=TRADING[:2])
    from server.binance import whole_market

    polls = []
    real = whole_market.WholeMarket.arrived

    def arrive_on_second_poll(self: Any, kind: str, symbols: Any) -> int:
        polls.append(list(symbols))
        if len(polls) == 2:
            all_there(fake_redis, symbols=TRADING[2:])
        return real(self, kind, symbols)

    monkeypatch.setattr(whole_market.WholeMarket, "arrived", arrive_on_second_poll)
    answer = app.test_client().get("/api/v3/ticker/bookTicker")
    assert answer.status_code == 200
    assert len(answer.get_json()) == 3
    assert polls[0] == [TRADING[2]]  # only what was missing is looked for while waiting


def test_a_symbol_whose_stream_went_stale_fails_the_list_at_once(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    all_there(fake_redis, symbols=TRADING[:2])
    stream_state(fake_redis, snapshot_key("bookticker", TRADING[2]), LIVE)  # had values
    started = time.monotonic()
    answer = client.get("/api/v3/ticker/bookTicker")
    assert answer.status_code == 503
    assert time.monotonic() - started < WAIT_MS / 1000  # nothing to wait for
    assert "not live" in answer.get_json()["msg"]


def test_a_starting_stream_is_waited_for(client: FlaskClient, fake_redis: redis.Redis) -> None:
    all_there(fake_redis, symbols=TRADING[:2])
    stream_state(fake_redis, snapshot_key("bookticker", TRADING[2]), PENDING)
    started = time.monotonic()
    assert client.get("/api/v3/ticker/bookTicker").status_code == 503
    assert time.monotonic() - started >= WAIT_MS / 1000


def test_a_current_whole_market_demand_is_refreshed_and_not_asked_again(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    all_there(fake_redis)
    asked_ms = int(time.time() * 1000) - 60_000
    fake_redis.zadd(DEMAND_KEY, {"bookticker:*": asked_ms})
    assert client.get("/api/v3/ticker/bookTicker").status_code == 200
    assert demand(fake_redis)["bookticker:*"] > asked_ms


def test_the_list_of_1300_symbols_is_read_in_one_round_trip(
    fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    symbols = [f"S{n:04d}USDT" for n in range(1300)]
    listing(fake_redis, symbols)
    all_there(fake_redis, symbols=symbols)
    fake_redis.zadd(DEMAND_KEY, {"bookticker:*": int(time.time() * 1000)})
    client = create_app({"demand_wait_ms": WAIT_MS}, client=fake_redis).test_client()
    client.get("/api/v3/ticker/bookTicker")  # loads the script once
    sent: list[str] = []
    real: Any = fake_redis.execute_command

    def count(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return real(*args, **options)

    monkeypatch.setattr(fake_redis, "execute_command", count)
    answer = client.get("/api/v3/ticker/bookTicker")
    assert answer.status_code == 200
    assert len(answer.get_json()) == 1300
    assert sent == ["EVALSHA"]


def test_no_symbol_list_yet_is_503(fake_redis: redis.Redis) -> None:
    client = create_app({"demand_wait_ms": WAIT_MS}, client=fake_redis).test_client()
    answer = client.get("/api/v3/ticker/price")
    assert answer.status_code == 503
    assert "symbol list" in answer.get_json()["msg"]


def test_with_nothing_on_demand_a_missing_market_is_429_but_a_whole_pinned_one_is_served(
    fake_redis: redis.Redis,
) -> None:
    listing(fake_redis, TRADING)
    client = create_app({"demand_wait_ms": WAIT_MS, "demand_max_streams": 0}, client=fake_redis).test_client()
    all_there(fake_redis, symbols=TRADING[:2])
    refused = client.get("/api/v3/ticker/bookTicker")
    assert refused.status_code == 429
    assert refused.get_json()["code"] == -1003
    assert int(refused.headers["Retry-After"]) >= 1
    all_there(fake_redis)  # as with --all: every symbol pinned
    assert client.get("/api/v3/ticker/bookTicker").status_code == 200
    assert demand(fake_redis) == {}


def test_redis_down_is_503(app: Flask, fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **options: Any) -> Any:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(fake_redis, "execute_command", down)
    answer = app.test_client().get("/api/v3/ticker/bookTicker")
    assert answer.status_code == 503
    assert answer.get_json()["code"] == -1001
    assert "refused" not in answer.get_json()["msg"]
