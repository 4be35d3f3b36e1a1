"""The Binance-compatible GET endpoints: Binance's shapes, parameters and error codes."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.keys import EXCHANGE_INFO_KEY, LIVE, SYMBOLS_KEY, snapshot_key
from contract.trade_history import tail_key
from server import create_app
from tests.records import book_levels, put_book, stream_state, vouched


def now_ms() -> int:
    return int(time.time() * 1000)


def put(client: redis.Redis, kind: str, symbol: str, **fields: Any) -> None:
    record = {"symbol": symbol, **fields, "ts": now_ms() - 10, "as_of": now_ms(), "source": "stream"}
    key = snapshot_key(kind, symbol)
    vouched(client, key, record, px=5000)
    stream_state(client, key, LIVE)


BOOK = {"bid_price": "1.10000000", "bid_quantity": "2.00000000", "ask_price": "1.20000000",
        "ask_quantity": "3.00000000", "update_id": 7}  # fmt: skip
TICKER = {
    "event_time": 1, "close": "1.15", "open": "1.00", "high": "1.30", "low": "0.90", "volume": "100",
    "quote_volume": "115", "price_change": "0.15", "price_change_percent": "15.000",
    "weighted_avg_price": "1.10", "prev_close_price": "1.00", "last_quantity": "5", "bid_price": "1.10",
    "bid_quantity": "2", "ask_price": "1.20", "ask_quantity": "3", "open_time": 10, "close_time": 20,
    "first_trade_id": 100, "last_trade_id": 199, "trades": 100,
}  # fmt: skip
# A partial book (the depth5/10/20 streams' record), for Transmute's own API (tests/server/test_kinds.py).
DEPTH: dict[str, Any] = {"last_update_id": 160, "bids": [[f"1.{9 - i}", "1"] for i in range(20)],
         "asks": [[f"2.{i}", "1"] for i in range(20)]}  # fmt: skip
# The full book: 300 levels a side, written 500 deep.
BIDS, ASKS = book_levels(300, 0), book_levels(300, 1)


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING", "BCCBTC": "BREAK"})
    listed = [{"symbol": "BTCUSDT", "status": "TRADING"}, {"symbol": "ETHBTC", "status": "TRADING"}]
    info = {"timezone": "UTC", "serverTime": 1, "rateLimits": [], "symbols": listed}
    fake_redis.set(EXCHANGE_INFO_KEY, orjson.dumps(info))
    put(fake_redis, "bookticker", "BTCUSDT", **BOOK)
    put(fake_redis, "bookticker", "ETHBTC", **BOOK)
    put(fake_redis, "ticker", "ETHBTC", **TICKER)
    put(fake_redis, "avgprice", "ETHBTC", event_time=1, interval="5m", price="1.12345678", last_trade_time=99)
    put_book(fake_redis, "ETHBTC", BIDS, ASKS, levels=500, limit=1000, px=5000)
    put(fake_redis, "trade", "ETHBTC", trade_id=3, price="4.00000100", quantity="12.00000000",
        trade_time=33, is_buyer_maker=True, event_time=33)  # fmt: skip
    fake_redis.zadd(tail_key("trade", "ETHBTC"), {orjson.dumps(
        {"id": n, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.00001200", "time": 30 + n,
         "isBuyerMaker": True, "isBestMatch": True}): n for n in (1, 2, 3)})  # fmt: skip
    return create_app({"demand_wait_ms": 50}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_ping_time_and_exchange_info(client: FlaskClient) -> None:
    assert client.get("/api/v3/ping").get_json() == {}
    assert abs(client.get("/api/v3/time").get_json()["serverTime"] - now_ms()) < 5000
    info = client.get('/api/v3/exchangeInfo?symbols=["ETHBTC"]').get_json()
    assert [s["symbol"] for s in info["symbols"]] == ["ETHBTC"]
    assert client.get("/api/v3/exchangeInfo?symbol=NOPE").get_json() == {
        "code": -1121,
        "msg": "Invalid symbol.",
    }


def test_book_ticker_for_one_a_list_and_every_streamed_symbol(client: FlaskClient) -> None:
    one = {"symbol": "BTCUSDT", "bidPrice": "1.10000000", "bidQty": "2.00000000",
           "askPrice": "1.20000000", "askQty": "3.00000000"}  # fmt: skip
    assert client.get("/api/v3/ticker/bookTicker?symbol=BTCUSDT").get_json() == one
    listed = client.get('/api/v3/ticker/bookTicker?symbols=["BTCUSDT","ETHBTC"]').get_json()
    assert [e["symbol"] for e in listed] == ["BTCUSDT", "ETHBTC"]
    everything = client.get("/api/v3/ticker/bookTicker").get_json()
    assert sorted(e["symbol"] for e in everything) == ["BTCUSDT", "ETHBTC"]


def test_price_24hr_full_and_mini_avg_price(client: FlaskClient) -> None:
    assert client.get("/api/v3/ticker/price?symbol=ETHBTC").get_json() == {
        "symbol": "ETHBTC",
        "price": "1.15",
    }
    full = client.get("/api/v3/ticker/24hr?symbol=ETHBTC").get_json()
    assert (full["lastPrice"], full["prevClosePrice"], full["count"], full["firstId"]) == (
        "1.15",
        "1.00",
        100,
        100,
    )
    mini = client.get("/api/v3/ticker/24hr?symbol=ETHBTC&type=MINI").get_json()
    assert set(mini) == {"symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
                         "openTime", "closeTime", "firstId", "lastId", "count"}  # fmt: skip
    avg = client.get("/api/v3/avgPrice?symbol=ETHBTC").get_json()
    assert avg == {"mins": 5, "price": "1.12345678", "closeTime": 99}


def test_depth_defaults_to_100_levels_and_slices(client: FlaskClient) -> None:
    book = client.get("/api/v3/depth?symbol=ETHBTC").get_json()
    assert (book["lastUpdateId"], len(book["bids"]), len(book["asks"])) == (160, 100, 100)
    top = client.get("/api/v3/depth?symbol=ETHBTC&limit=15").get_json()
    assert top["bids"] == [orjson.loads(level) for level in BIDS[:15]]
    assert top["asks"] == [orjson.loads(level) for level in ASKS[:15]]


def test_recent_trades_oldest_first_with_exact_quote_quantity(client: FlaskClient) -> None:
    trades = client.get("/api/v3/trades?symbol=ETHBTC&limit=2").get_json()
    assert trades == [
        {"id": n, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.00001200", "time": 30 + n,
         "isBuyerMaker": True, "isBestMatch": True}
        for n in (2, 3)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v3/ticker/bookTicker?symbol=NOPEUSDT", 400, -1121),
        ("/api/v3/ticker/bookTicker?symbol=BTC-USDT", 400, -1121),
        ("/api/v3/ticker/bookTicker?symbol=BTCUSDT&symbols=[]", 400, -1128),
        ("/api/v3/ticker/bookTicker?symbols=BTCUSDT", 400, -1100),
        # A JSON list, but not as the document's pattern ^\[.+\]$ gives it: whitespace around it, a newline.
        ('/api/v3/ticker/bookTicker?symbols=%20["BTCUSDT"]', 400, -1100),
        ('/api/v3/ticker/bookTicker?symbols=["BTCUSDT"]%20', 400, -1100),
        ('/api/v3/ticker/price?symbols=[%0A"BTCUSDT"]', 400, -1100),
        ('/api/v3/exchangeInfo?symbols=%09["ETHBTC"]', 400, -1100),
        ("/api/v3/avgPrice", 400, -1102),
        ("/api/v3/depth?symbol=ETHBTC&limit=0", 400, -1130),
        ("/api/v3/trades?symbol=ETHBTC&limit=0", 400, -1130),
        ("/api/v3/ticker/24hr?symbol=ETHBTC&type=HUGE", 400, -1139),
        ("/api/v3/ticker/bookTicker?symbol=BCCBTC", 503, -1001),  # not trading
        ("/api/v3/avgPrice?symbol=BTCUSDT", 503, -1001),  # not streamed: asked for, nothing came
        ("/api/v3/nope", 404, -1000),
    ],
)
def test_errors_come_in_binance_shape(client: FlaskClient, path: str, status: int, code: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"code", "msg"}
    assert body["code"] == code


def test_a_value_that_cannot_be_vouched_for_is_503_never_old(
    fake_redis: redis.Redis, client: FlaskClient
) -> None:
    fake_redis.delete(snapshot_key("bookticker", "btcusdt"))  # its stream is "live", the value is gone
    response = client.get("/api/v3/ticker/bookTicker?symbol=BTCUSDT")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["code"] == -1001


def test_post_is_not_part_of_binances_api(client: FlaskClient) -> None:
    response = client.post("/api/v3/ping")
    assert response.status_code == 405
    assert response.get_json()["code"] == -1000
