"""``POST /snapshot/<SYMBOL>`` and every error it answers, as a client sees them."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from contract.keys import LIVE, SYMBOLS_KEY, snapshot_key
from server import create_app
from server.fast import MAX_PATHS, FastSnapshots
from tests.processes import free_port
from tests.records import stream_state, vouched

KEY = snapshot_key("bookticker", "btcusdt")


def record(**overrides: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    doc = {
        "symbol": "BTCUSDT",
        "bid_price": "25.35190000",
        "bid_quantity": "31.21000000",
        "ask_price": "25.36520000",
        "ask_quantity": "40.66000000",
        "update_id": 400900217,
        "ts": now - 60_000,
        "as_of": now - 100,
        "source": "stream",
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    # The messenger's catalog and stream states: BTCUSDT is streamed, ETHBTC is listed but halted.
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "BNBBTC": "TRADING", "ETHBTC": "BREAK"})
    stream_state(fake_redis, KEY, LIVE)
    return create_app({"demand_wait_ms": 100}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def stored(fake_redis: redis.Redis) -> dict[str, Any]:
    doc = record()
    vouched(fake_redis, KEY, doc, px=1000)
    return doc


@pytest.mark.parametrize("spelling", ["BTC_USDT", "BTCUSDT", "btcusdt", "btc_usdt"])
def test_post_answers_the_stored_value_for_every_spelling(
    client: FlaskClient, stored: dict[str, Any], spelling: str
) -> None:
    response = client.post(f"/snapshot/{spelling}")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert {k: body[k] for k in stored} == stored
    assert 100 <= body["age_ms"] < 2000


def test_prices_come_back_as_the_exact_strings(client: FlaskClient, fake_redis: redis.Redis) -> None:
    vouched(fake_redis, KEY, record(bid_price="0.00000001", ask_price="100000.10000000"))
    body = orjson.loads(client.post("/snapshot/BTC_USDT").data)
    assert (body["bid_price"], body["ask_price"]) == ("0.00000001", "100000.10000000")


def test_a_streamed_symbol_without_a_current_value_is_a_500_json_error(client: FlaskClient) -> None:
    response = client.post("/snapshot/BTC_USDT")
    assert response.status_code == 500
    assert response.get_json() == {
        "status_code": 500,
        "error": "No current data for BTCUSDT: its stream is not live, or it is not streamed.",
    }


def test_expired_value_is_a_500(client: FlaskClient, fake_redis: redis.Redis) -> None:
    vouched(fake_redis, KEY, record(), px=1)
    time.sleep(0.01)
    assert client.post("/snapshot/BTC_USDT").status_code == 500


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_other_methods_are_400_with_the_contract_message(
    client: FlaskClient, stored: dict[str, Any], method: str
) -> None:
    response = client.open("/snapshot/BTC_USDT", method=method)
    assert response.status_code == 400
    assert response.get_json() == {"status_code": 400, "error": f"{method} not supported."}


def test_head_is_400_without_a_body(client: FlaskClient) -> None:
    response = client.head("/snapshot/BTC_USDT")
    assert response.status_code == 400
    assert response.data == b""


@pytest.mark.parametrize("symbol", ["BTC-USDT", "B", "BTC__USDT", "A" * 40, "%F0%9F%98%80", "btc%20usdt"])
def test_malformed_symbols_are_400_json(client: FlaskClient, symbol: str) -> None:
    response = client.post(f"/snapshot/{symbol}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["status_code"] == 400
    assert body["error"].startswith("Invalid symbol: ")


@pytest.mark.parametrize("spelling", ["BTCU\u017fDT", "btcu\u017fdt", "BTC_U\ufb06DT"])  # long s; st ligature
def test_letters_that_only_str_upper_makes_ascii_do_not_spell_a_symbol(
    client: FlaskClient, stored: dict[str, Any], spelling: str
) -> None:
    # "\u017f".upper() is "S" (long s): POST /snapshot/BTCU%C5%BFDT was answered BTCUSDT's value
    # (schemathesis ST201: the path's pattern is ASCII letters and digits). It is another, unknown symbol.
    quoted = quote(spelling)
    assert client.post(f"/snapshot/{quoted}").status_code == 404
    assert client.post("/snapshots", json={"symbols": [spelling]}).status_code == 404
    answer = client.get(f"/api/v3/ticker/bookTicker?symbol={quoted}")
    assert (answer.status_code, answer.get_json()["code"]) == (400, -1121)


def test_a_huge_path_is_json_not_a_crash(client: FlaskClient) -> None:
    response = client.post("/snapshot/" + "A" * 100_000)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("Invalid symbol: symbol is too long")


@pytest.mark.parametrize("path", ["/snapshot", "/snapshot/", "/snapshot/BTC/USDT", "/nope"])
def test_unknown_routes_are_404_json(client: FlaskClient, path: str) -> None:
    response = client.post(path)
    assert response.status_code == 404
    assert response.get_json()["status_code"] == 404


def test_max_age_in_the_query_or_body_turns_an_old_confirmation_into_the_stale_error(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    vouched(fake_redis, KEY, record(as_of=int(time.time() * 1000) - 3000))
    assert client.post("/snapshot/BTC_USDT?max_age_ms=10000").status_code == 200
    for response in (
        client.post("/snapshot/BTC_USDT?max_age_ms=1000"),
        client.post("/snapshot/BTC_USDT", json={"max_age_ms": 1000}),
    ):
        assert response.status_code == 500
        assert "over max_age_ms=1000" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("query", "body"),
    [("?max_age_ms=-1", None), ("?max_age_ms=soon", None), ("?max_age_ms=", None),
     ("", b'{"max_age_ms": null}'), ("", b'{"max_age_ms": 1.5}'),
     ("", b'{"max_age_ms": "x"}'), ("", b"{not json"), ("", b"[1, 2]")],
)  # fmt: skip
def test_bad_max_age_or_body_is_400(
    client: FlaskClient, stored: dict[str, Any], query: str, body: bytes | None
) -> None:
    response = client.post(f"/snapshot/BTC_USDT{query}", data=body)
    assert response.status_code == 400
    assert response.get_json()["status_code"] == 400


def test_a_body_over_the_limit_is_413_json(client: FlaskClient) -> None:
    response = client.post("/snapshot/BTC_USDT", data=b"{" + b" " * 100_000 + b"}")
    assert response.status_code == 413
    assert response.get_json()["status_code"] == 413


def test_a_corrupt_stored_value_is_never_served(client: FlaskClient, fake_redis: redis.Redis) -> None:
    fake_redis.set(KEY, b"not json")
    assert client.post("/snapshot/BTC_USDT").status_code == 500


def test_the_app_starts_without_redis_and_answers_503_json_until_it_is_there() -> None:
    app = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    response = app.test_client().post("/snapshot/BTC_USDT")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {"status_code": 503, "error": "Data store unavailable; try again shortly."}


def test_a_method_no_route_takes_is_405_json_with_allow(client: FlaskClient) -> None:
    response = client.open("/healthz", method="DELETE")
    assert response.status_code == 405
    assert response.get_json()["status_code"] == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "HEAD"}


def served_count() -> float:
    labels = {"route": "/snapshot/<symbol>", "method": "POST", "status": "200"}
    return REGISTRY.get_sample_value("transmute_http_requests_total", labels) or 0.0


def test_the_plain_request_gets_the_same_answer_as_one_the_flask_view_takes(
    client: FlaskClient, stored: dict[str, Any]
) -> None:
    plain = client.post("/snapshot/btc_usdt")  # answered before Flask (server/fast.py)
    with_query = client.post("/snapshot/btc_usdt?max_age_ms=60000")  # answered by the view
    assert plain.status_code == with_query.status_code == 200
    assert plain.content_type == with_query.content_type == "application/json"
    fast, view = plain.get_json(), with_query.get_json()
    assert abs(fast.pop("age_ms") - view.pop("age_ms")) <= 50
    assert fast == view == stored


def test_every_answer_is_counted_whichever_path_gives_it(client: FlaskClient, stored: dict[str, Any]) -> None:
    before = served_count()
    client.post("/snapshot/BTC_USDT")
    client.post("/snapshot/BTC_USDT", json={"max_age_ms": 60000})
    assert served_count() == before + 2


def test_the_plain_path_remembers_what_a_path_names_never_a_value(
    client: FlaskClient, fake_redis: redis.Redis, stored: dict[str, Any]
) -> None:
    assert client.post("/snapshot/BTC_USDT").get_json()["update_id"] == stored["update_id"]
    vouched(fake_redis, KEY, record(update_id=stored["update_id"] + 1), px=1000)
    assert client.post("/snapshot/BTC_USDT").get_json()["update_id"] == stored["update_id"] + 1
    fake_redis.delete(KEY)
    assert client.post("/snapshot/BTC_USDT").status_code == 500  # and never the one remembered


def test_any_number_of_odd_paths_is_answered_in_json_and_remembered_within_bounds(
    app: Flask, client: FlaskClient, fake_redis: redis.Redis
) -> None:
    fast = app.wsgi_app.app  # type: ignore[attr-defined] # inside the body deadline (server/app.py)
    assert isinstance(fast, FastSnapshots)
    for n in range(MAX_PATHS + 100):
        answer = client.post(f"/snapshot/NOPE{n}X")
        assert answer.status_code in (400, 404, 500) and "error" in answer.get_json()
    assert len(fast._symbols) <= MAX_PATHS
    vouched(fake_redis, KEY, record(update_id=7), px=1000)
    assert client.post("/snapshot/BTC_USDT").get_json()["update_id"] == 7
