"""``POST /snapshot/<SYMBOL>/<kind>`` and ``POST /snapshots``."""

from __future__ import annotations

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.keys import SYMBOLS_KEY
from server import create_app
from tests.server.test_binance_api import BOOK, DEPTH, put


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING", "BNBBTC": "TRADING"})
    put(fake_redis, "bookticker", "BTCUSDT", **BOOK)
    put(fake_redis, "bookticker", "ETHBTC", **BOOK, extra="eth")
    put(fake_redis, "depth5", "ETHBTC", **DEPTH)
    put(fake_redis, "kline_1M", "ETHBTC", interval="1M", open="1.0")
    put(fake_redis, "kline_1m", "ETHBTC", interval="1m", open="2.0")
    return create_app({"demand_wait_ms": 50}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.mark.parametrize("kind", ["depth5", "DEPTH5", "Depth5"])
def test_any_kind_in_any_case(client: FlaskClient, kind: str) -> None:
    body = client.post(f"/snapshot/eth_btc/{kind}").get_json()
    assert body["last_update_id"] == 160
    assert body["age_ms"] >= 0


@pytest.mark.parametrize("kind", ["\u212aline_1m", "\u212aLINE_1m", "bookTic\u212aer"])
def test_only_ascii_letters_change_case_in_a_kind(client: FlaskClient, kind: str) -> None:
    # "\u212a".lower() is "k" (Kelvin sign): /snapshot/ETHBTC/%E2%84%AAline_1m was kline_1m.
    response = client.post(f"/snapshot/ETHBTC/{kind}")
    assert response.status_code == 404
    assert response.get_json()["error"].startswith("Unknown stream kind")


def test_a_klines_interval_is_case_sensitive(client: FlaskClient) -> None:
    assert client.post("/snapshot/ETHBTC/kline_1M").get_json()["interval"] == "1M"
    assert client.post("/snapshot/ETHBTC/KLINE_1m").get_json()["interval"] == "1m"


def test_the_bookticker_route_is_the_default_kind(client: FlaskClient) -> None:
    plain, explicit = (
        client.post("/snapshot/BTCUSDT").get_json(),
        client.post("/snapshot/BTCUSDT/bookTicker").get_json(),
    )
    del plain["age_ms"], explicit["age_ms"]
    assert plain == explicit


def test_an_unknown_kind_is_404_listing_the_kinds(client: FlaskClient) -> None:
    response = client.post("/snapshot/BTCUSDT/candles")
    assert response.status_code == 404
    assert "kline_1M" in response.get_json()["error"]
    assert client.post("/snapshot/BTCUSDT/kline_7m").status_code == 404


def test_several_symbols_in_one_answer_in_the_order_asked(client: FlaskClient) -> None:
    body = client.post("/snapshots", json={"symbols": ["eth_btc", "BTC_USDT"]}).get_json()
    assert body["kind"] == "bookTicker"
    assert [s["symbol"] for s in body["snapshots"]] == ["ETHBTC", "BTCUSDT"]
    query = client.post("/snapshots?symbols=BTCUSDT,ETHBTC&kind=bookticker").get_json()
    assert [s["symbol"] for s in query["snapshots"]] == ["BTCUSDT", "ETHBTC"]


def test_several_symbols_fail_together_when_one_has_no_value(client: FlaskClient) -> None:
    response = client.post("/snapshots", json={"symbols": ["BTCUSDT", "BNBBTC"]})
    assert response.status_code == 503  # BNBBTC is asked for, and nothing came in time
    assert "BNBBTC" in response.get_json()["error"]
    unknown = client.post("/snapshots", json={"symbols": ["BTCUSDT", "NOPEUSDT"]})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "body",
    [{}, {"symbols": []}, {"symbols": ""}, {"symbols": [1]}, {"symbols": ["B$"]},
     {"symbols": ["X"] * 101}, {"symbols": ["BTCUSDT"], "kind": 5}],
)  # fmt: skip
def test_bad_multi_requests_are_400_or_404(client: FlaskClient, body: dict[str, object]) -> None:
    response = client.post("/snapshots", json=body)
    assert response.status_code in (400, 404)
    assert response.get_json()["status_code"] == response.status_code


def test_get_on_snapshots_is_400(client: FlaskClient) -> None:
    assert client.get("/snapshots").get_json() == {"status_code": 400, "error": "GET not supported."}
