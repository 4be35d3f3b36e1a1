"""GET /api/v3/klines: Binance's range rules over kept candles and the stream's open one, and never
an answer with a hole in it or an open candle its stream does not vouch for."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.backfill import BACKFILL_KEY
from contract.keys import LIVE, SYMBOLS_KEY, snapshot_key
from contract.klines import (
    HISTORY_TTL_MS,
    WRITE_SCRIPT,
    encode_row,
    page_key,
    page_to_key,
    write_keys,
)
from server import create_app
from tests.records import stream_state, vouched

MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


NOW_OPEN = now_ms() - now_ms() % MINUTE  # the open candle's window
T0 = NOW_OPEN - 10 * MINUTE  # ten closed candles: T0 .. NOW_OPEN - 1


def row(n: int) -> list[Any]:
    start = T0 + n * MINUTE
    price = f"{100 + n}.00000000"
    return [
        start,
        price,
        price,
        price,
        price,
        "1.00000000",
        start + MINUTE - 1,
        "100.00000000",
        3,
        "0.5",
        "50",
        "0",
    ]


def keep(client: redis.Redis, rows: list[list[Any]], mode: str = "seed") -> None:
    args: list[Any] = [mode, 1000, 10_000, HISTORY_TTL_MS]
    for r in rows:
        args += [r[0], encode_row(r)]
    assert client.eval(WRITE_SCRIPT, 3, *write_keys("1m", "BTCUSDT"), *args) >= 0


def stream(client: redis.Redis, n: int, closed: bool = False, px: int = 5000) -> None:
    """The kline stream's record: the candle n, vouched for ``px`` ms."""
    r = row(n)
    record = {
        "symbol": "BTCUSDT", "open_time": r[0], "close_time": r[6], "interval": "1m", "first_trade_id": 1,
        "last_trade_id": 3, "open": r[1], "high": r[2], "low": r[3], "close": r[4], "volume": r[5],
        "trades": r[8], "closed": closed, "quote_volume": r[7], "taker_buy_base_volume": r[9],
        "taker_buy_quote_volume": r[10], "event_time": now_ms(), "ts": now_ms(), "as_of": now_ms(),
        "source": "stream",
    }  # fmt: skip
    vouched(client, snapshot_key("kline_1m", "btcusdt"), record, px=px)
    stream_state(client, snapshot_key("kline_1m", "btcusdt"), LIVE)


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING"})
    keep(fake_redis, [row(n) for n in range(10)], "seed-origin")
    stream(fake_redis, 10)
    return create_app({"demand_wait_ms": 200}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, **params: Any) -> tuple[int, Any]:
    response = client.get("/api/v3/klines", query_string={"symbol": "BTCUSDT", "interval": "1m", **params})
    return response.status_code, orjson.loads(response.data)


def test_the_latest_candles_end_with_the_open_one(client: FlaskClient) -> None:
    status, rows = get(client, limit=3)
    assert status == 200
    assert rows == [row(8), row(9), row(10)]
    status, rows = get(client)
    assert rows == [row(n) for n in range(11)]  # default 500: all there is since the origin


def test_ranges_follow_binances_rules(client: FlaskClient) -> None:
    assert get(client, startTime=T0 + 2 * MINUTE, limit=3)[1] == [row(2), row(3), row(4)]
    assert get(client, startTime=T0 + 2 * MINUTE + 1, limit=2)[1] == [row(3), row(4)]
    assert get(client, endTime=T0 + 5 * MINUTE, limit=2)[1] == [row(4), row(5)]
    assert get(client, startTime=T0 + 8 * MINUTE, endTime=T0 + 9 * MINUTE)[1] == [row(8), row(9)]
    assert get(client, startTime=T0 + 9 * MINUTE)[1] == [row(9), row(10)]
    assert get(client, startTime=T0 + 20 * MINUTE)[1] == []
    response = client.get(
        "/api/v3/uiKlines", query_string={"symbol": "BTCUSDT", "interval": "1m", "limit": "1"}
    )
    assert orjson.loads(response.data) == [row(10)]


def test_closed_candles_are_served_when_the_stream_is_not_vouched_for_the_open_one_is_not(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    fake_redis.delete(snapshot_key("kline_1m", "btcusdt"))
    assert get(client, startTime=T0, endTime=T0 + 5 * MINUTE) == (200, [row(n) for n in range(6)])
    assert get(client, startTime=T0, limit=4)[1] == [row(n) for n in range(4)]
    status, body = get(client, limit=3)
    assert status == 503
    assert body["code"] == -1001


def test_a_hole_between_kept_and_open_candles_is_never_served(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    stream(fake_redis, 12)  # the stream is two candles on: 10 and 11 were missed
    status, body = get(client, limit=5)
    assert status == 503
    assert body["code"] == -1001
    assert "missed" in body["msg"]
    assert get(client, endTime=T0 + 9 * MINUTE, limit=2) == (200, [row(8), row(9)])  # before the hole


def test_older_candles_than_kept_are_asked_of_the_messenger(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    keep(fake_redis, [row(n) for n in range(5, 10)])  # no origin: older ones exist
    assert get(client, startTime=T0, limit=2)[0] == 503
    assert fake_redis.zrange(BACKFILL_KEY, 0, -1) == [f"kline_1m:BTCUSDT:{T0}".encode()]
    status, rows = get(client, startTime=T0 + 5 * MINUTE, limit=2)
    assert (status, rows) == (200, [row(5), row(6)])


def test_a_just_closed_candle_with_the_next_not_begun_answers_up_to_it(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    stream(fake_redis, 9, closed=True)
    assert get(client, limit=2) == (200, [row(8), row(9)])


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"interval": "2m"}, -1120),
        ({"interval": ""}, -1102),
        ({"limit": "1001"}, -1130),
        ({"limit": "0"}, -1130),
        ({"startTime": "x"}, -1100),
        ({"startTime": "5", "endTime": "4"}, -1023),
        ({"symbol": "NOPE!"}, -1121),
        ({"timeZone": "+25:00"}, -1100),
        ({"timeZone": "+08:00", "interval": "1d"}, -1100),
    ],
)
def test_bad_parameters_get_binances_errors(client: FlaskClient, params: dict[str, str], code: int) -> None:
    status, body = get(client, **params)
    assert status == 400
    assert body["code"] == code


def test_a_time_zone_that_leaves_the_windows_alone_is_accepted(client: FlaskClient) -> None:
    assert get(client, timeZone="+08:00", limit=1) == (200, [row(10)])
    assert get(client, timeZone="0", limit=1) == (200, [row(10)])


def test_a_range_too_old_to_keep_in_line_is_answered_from_its_page(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    keep(fake_redis, [row(n) for n in range(5, 10)])  # no origin: older ones exist
    old = T0 - 5000 * MINUTE
    page = [row(n - 5000) for n in range(3)]
    fake_redis.set(page_key("1m", "BTCUSDT", old), orjson.dumps(page), px=60_000)
    assert get(client, startTime=old, limit=2) == (200, page[:2])
    assert get(client, startTime=old, endTime=old + MINUTE) == (200, page[:2])
    assert get(client, startTime=old, limit=5)[0] == 503  # the page does not hold five


def test_a_workers_copy_of_the_kept_candles_follows_every_write(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    assert get(client, limit=3) == (200, [row(8), row(9), row(10)])  # the worker copies the set
    keep(fake_redis, [row(10)], mode="append")  # candle 10 closed
    stream(fake_redis, 11)
    assert get(client, limit=3) == (200, [row(9), row(10), row(11)])
    keep(fake_redis, [row(n) for n in range(3, 11)], mode="seed")  # a new seed: same last row, fewer
    assert get(client, endTime=T0 + 4 * MINUTE, limit=2) == (200, [row(3), row(4)])
    assert get(client, endTime=T0 + 4 * MINUTE, limit=3)[0] == 503  # 2 is gone: older ones are fetched


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "3"},
        {"startTime": str(T0 + 2 * MINUTE), "limit": "3"},
        {"endTime": str(T0 + 5 * MINUTE)},
        {},
    ],
)
def test_the_fast_path_answers_byte_for_byte_as_the_view(client: FlaskClient, params: dict[str, str]) -> None:
    query = {"symbol": "BTCUSDT", "interval": "1m", **params}
    fast = client.get("/api/v3/klines", query_string=query)
    view = client.get("/api/v3/klines", query_string={**query, "timeZone": "0"})  # timeZone: Flask's
    assert fast.status_code == view.status_code == 200
    assert fast.data == view.data
    assert fast.headers["X-MBX-USED-WEIGHT-1M"] == view.headers["X-MBX-USED-WEIGHT-1M"] == "0"
    assert fast.headers["Content-Type"] == view.headers["Content-Type"]


def test_an_end_older_than_kept_is_answered_from_its_page_up_to_it(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    keep(fake_redis, [row(n) for n in range(5, 10)])  # no origin: older ones exist
    end = T0 - 5000 * MINUTE
    assert get(client, endTime=end, limit=2)[0] == 503
    assert fake_redis.zrange(BACKFILL_KEY, 0, -1) == [f"klineto_1m:BTCUSDT:{end}".encode()]
    page = [row(n - 5003) for n in range(4)]  # the exchange's 1,000 up to ``end``: here, all there is
    fake_redis.set(page_to_key("1m", "BTCUSDT", end), orjson.dumps(page), px=60_000)
    assert get(client, endTime=end, limit=2) == (200, page[2:])  # the last two opening at or before it
    fake_redis.set(page_to_key("1m", "BTCUSDT", 1000), b"[]", px=60_000)  # before the first candle
    assert get(client, endTime=1000, limit=5) == (200, [])
