"""/api/v3/ticker (rolling windows), /sapi/v1/system/status, and the used-weight header."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from flask.testing import FlaskClient

from contract.keys import SYMBOLS_KEY
from server import create_app
from tests.records import heartbeat
from tests.server.test_binance_api import put

ROLLING = {
    "event_time": 5, "price_change": "-8.00000000", "price_change_percent": "-88.889",
    "open": "9.00000000", "high": "9.00000000", "low": "1.00000000", "close": "1.00000000",
    "weighted_avg_price": "2.60427807", "volume": "187.00000000", "quote_volume": "487.00000000",
    "open_time": 1641859200000, "close_time": 1642031999999, "first_trade_id": 0, "last_trade_id": 60,
    "trades": 61,
}  # fmt: skip
FULL = {
    "symbol": "ETHBTC", "priceChange": "-8.00000000", "priceChangePercent": "-88.889",
    "weightedAvgPrice": "2.60427807", "openPrice": "9.00000000", "highPrice": "9.00000000",
    "lowPrice": "1.00000000", "lastPrice": "1.00000000", "volume": "187.00000000",
    "quoteVolume": "487.00000000", "openTime": 1641859200000, "closeTime": 1642031999999, "firstId": 0,
    "lastId": 60, "count": 61,
}  # fmt: skip
MINI_NAMES = ["symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
              "openTime", "closeTime", "firstId", "lastId", "count"]  # fmt: skip


@pytest.fixture
def client(fake_redis: redis.Redis) -> FlaskClient:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING"})
    for window in ("1h", "4h", "1d"):
        trades = {"1h": 1, "4h": 4}.get(window, 61)
        put(fake_redis, f"ticker_{window}", "ETHBTC", **{**ROLLING, "trades": trades})
    put(fake_redis, "ticker_1d", "BTCUSDT", **ROLLING)
    return create_app({"demand_wait_ms": 50}, client=fake_redis).test_client()


def test_rolling_window_full_and_mini_in_binances_order_with_1d_by_default(client: FlaskClient) -> None:
    full = client.get("/api/v3/ticker?symbol=ETHBTC")
    assert full.status_code == 200
    assert list(full.get_json().items()) == list(FULL.items())
    mini = client.get("/api/v3/ticker?symbol=ETHBTC&type=MINI&windowSize=1d").get_json()
    assert list(mini) == MINI_NAMES
    assert mini == {k: FULL[k] for k in MINI_NAMES}


@pytest.mark.parametrize(("window", "count"), [("1h", 1), ("4h", 4), ("1d", 61)])
def test_each_streamed_window_answers_from_its_own_stream(
    client: FlaskClient, window: str, count: int
) -> None:
    assert client.get(f"/api/v3/ticker?symbol=ETHBTC&windowSize={window}").get_json()["count"] == count


def test_symbols_answers_a_list_in_the_order_asked(client: FlaskClient) -> None:
    answer = client.get('/api/v3/ticker?symbols=["ETHBTC","BTCUSDT"]').get_json()
    assert [e["symbol"] for e in answer] == ["ETHBTC", "BTCUSDT"]


@pytest.mark.parametrize("window", ["1m", "59m", "2h", "23h", "2d", "7d"])
def test_a_window_binance_accepts_but_no_stream_carries_is_a_400_naming_the_supported_ones(
    client: FlaskClient, window: str
) -> None:
    answer = client.get(f"/api/v3/ticker?symbol=ETHBTC&windowSize={window}")
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["code"] == -1130
    assert f"windowSize {window} is not supported" in body["msg"]
    assert "1h, 4h and 1d" in body["msg"]


@pytest.mark.parametrize("window", ["60m", "24h", "8d", "0m", "1w", "1d2h", "1H", "", "abc", "01h", "1.5h"])
def test_a_window_binance_refuses_is_its_400(client: FlaskClient, window: str) -> None:
    answer = client.get(f"/api/v3/ticker?symbol=ETHBTC&windowSize={window}")
    assert answer.status_code == 400
    assert answer.get_json() == {"code": -1130, "msg": "Data sent for parameter 'windowSize' is not valid."}


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", -1102),
        ("?windowSize=1h", -1102),
        ("?symbol=ETHBTC&type=SHORT", -1139),
        ("?symbol=NOPEUSDT", -1121),
        ('?symbol=ETHBTC&symbols=["ETHBTC"]', -1128),
        ("?symbols=" + orjson.dumps([f"S{n}USDT" for n in range(101)]).decode(), -1101),
    ],
)
def test_bad_parameters_are_binances_errors(client: FlaskClient, query: str, code: int) -> None:
    answer = client.get(f"/api/v3/ticker{query}")
    assert answer.status_code == 400
    assert answer.get_json()["code"] == code


def test_a_rolling_window_is_a_kind_of_our_own_api_too(client: FlaskClient) -> None:
    answer = client.post("/snapshot/ETH_BTC/ticker_4h")
    assert answer.status_code == 200
    assert (answer.get_json()["trades"], answer.get_json()["close"]) == (4, "1.00000000")
    assert client.post("/snapshot/ETH_BTC/TICKER_1H").get_json()["trades"] == 1


def test_a_rolling_window_with_no_current_value_is_503(client: FlaskClient) -> None:
    answer = client.get("/api/v3/ticker?symbol=BTCUSDT&windowSize=4h")  # not streamed: asked for
    assert answer.status_code == 503
    assert answer.get_json()["code"] == -1001


def beat(client: redis.Redis, **fields: Any) -> None:
    heartbeat(client, orjson.dumps({"pid": 1, "binance": "connected", **fields}))


@pytest.mark.parametrize(
    ("heartbeat", "status"),
    [
        (None, {"status": 1, "msg": "system maintenance"}),
        ({"live_connections": 0}, {"status": 1, "msg": "system maintenance"}),
        ({"live_connections": 2}, {"status": 0, "msg": "normal"}),
    ],
)
def test_system_status_is_normal_only_while_the_messenger_has_a_live_connection(
    client: FlaskClient, fake_redis: redis.Redis, heartbeat: dict[str, Any] | None, status: dict[str, Any]
) -> None:
    if heartbeat is not None:
        beat(fake_redis, **heartbeat)
    answer = client.get("/sapi/v1/system/status")
    assert answer.status_code == 200
    assert answer.get_json() == status


def test_system_status_without_redis_is_maintenance_not_an_error(
    client: FlaskClient, fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat(fake_redis, live_connections=1)

    def down(*args: Any, **options: Any) -> Any:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(fake_redis, "execute_command", down)
    answer = client.get("/sapi/v1/system/status")
    assert (answer.status_code, answer.get_json()["status"]) == (200, 1)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v3/ping", 200),
        ("/api/v3/ticker?symbol=ETHBTC", 200),
        ("/api/v3/ticker?symbol=ETHBTC&windowSize=2h", 400),
        ("/api/v3/ticker?symbol=BTCUSDT&windowSize=1h", 503),
        ("/api/v3/nothing", 404),
        ("/sapi/v1/system/status", 200),
        ("/sapi/v1/nothing", 404),
    ],
)
def test_every_binance_answer_says_it_used_no_weight(client: FlaskClient, path: str, status: int) -> None:
    answer = client.get(path)
    assert answer.status_code == status
    assert answer.headers["X-MBX-USED-WEIGHT-1M"] == "0"
    assert "code" in answer.get_json() or status == 200  # Binance's error shape under /sapi too


def test_our_own_api_carries_no_binance_header(client: FlaskClient) -> None:
    answer = client.post("/snapshot/ETH_BTC/ticker_1d")
    assert answer.status_code == 200
    assert "X-MBX-USED-WEIGHT-1M" not in answer.headers
