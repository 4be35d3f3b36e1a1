"""The status page, its data, and the API description pages."""

from __future__ import annotations

import re
import time

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.keys import PENDING, snapshot_key
from contract.symbols import InvalidSymbol, normalize_symbol
from server import create_app
from server.openapi import NOT_SUPPORTED, document
from tests.records import heartbeat, stream_state
from tests.server.test_binance_api import BOOK, put


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    put(fake_redis, "bookticker", "BTCUSDT", **BOOK, connection=3)
    stream_state(fake_redis, snapshot_key("bookticker", "ethbtc"), PENDING)  # streamed, no value yet
    beat = {
        "connections": 1,
        "streams": 2,
        "tracked": 2,
        "fresh": 1,
        "redis": True,
        "ts": int(time.time() * 1000),
    }
    heartbeat(fake_redis, orjson.dumps(beat))
    return create_app(client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_status_data_lists_every_streamed_symbol_with_bid_ask_age_and_connection(client: FlaskClient) -> None:
    body = client.get("/status.json").get_json()
    assert body["messenger"]["connections"] == 1
    btc, eth = body["symbols"]
    assert (btc["symbol"], btc["bid_price"], btc["ask_price"], btc["connection"]) == (
        "BTCUSDT",
        "1.10000000",
        "1.20000000",
        3,
    )
    assert btc["fresh"] is True
    assert 0 <= btc["age_ms"] < 5000
    assert eth == {"symbol": "ETHBTC", "fresh": False}


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_load_nothing_from_outside(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    html = response.get_data(as_text=True)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert '<meta name="viewport"' in html  # readable on a phone


def test_the_docs_page_leads_with_contents_and_folds_the_refused_methods(client: FlaskClient) -> None:
    html = client.get("/docs").get_data(as_text=True)
    contents, body = html.split('<h2 id="errors">', 1)
    for path, operations in document()["paths"].items():
        for method, op in operations.items():
            heading = f"{method.upper()}</span> <code>{path}</code>"
            if op["summary"] == NOT_SUPPORTED:  # one line under the path, not an operation of its own
                assert heading not in body
                folded = rf"<code>{re.escape(path)}</code></h3>\s*<p>[^<]*<span[^>]*>Any other method \([^)]*"
                assert re.search(folded + method.upper(), body), (method, path)
            else:
                assert heading in contents, f"{method} {path} is not in the contents"
                assert body.count(heading) == 1, f"{method} {path}"
    assert NOT_SUPPORTED not in html


def test_the_docs_page_shows_every_response_shape_field_by_field(client: FlaskClient) -> None:
    html = client.get("/docs").get_data(as_text=True)
    for name, schema in document()["components"]["schemas"].items():
        assert f'<h3 id="shape-{name}">' in html
        shape = html.split(f'<h3 id="shape-{name}">', 1)[1].split("<h3", 1)[0]
        for field in schema.get("properties", {}):
            assert f"<td><code>{field}</code></td>" in shape, f"{name}.{field}"
    snapshot = html.split('id="post-snapshot-symbol"', 1)[1].split("<h3", 1)[0]
    assert '<td>200</td><td>The current value</td><td><a href="#shape-BookTicker">BookTicker</a>' in snapshot


def test_the_openapi_document_is_served_as_json(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert doc == orjson.loads(orjson.dumps(document()))


@pytest.mark.parametrize(
    "spelling",
    ["BTC_USDT", "btcusdt", "1000SATS_USDT", "币安人生USDT", "币安人生_usdt",  # accepted by the server
     "BTC-USDT", "BTC__USDT", "_BTCUSDT", "BTCUSDT_", "BTC%USDT", "BTC USDT", "A" * 21, "A" * 22],  # refused
)  # fmt: skip
def test_the_documents_symbol_pattern_takes_what_the_server_takes(spelling: str) -> None:
    # An OpenAPI client checks the path against the pattern before sending: a symbol the server
    # serves (Binance lists some in UTF-8) must pass it, and one it refuses as malformed must not.
    [symbol] = [
        p for p in document()["paths"]["/snapshot/{symbol}"]["post"]["parameters"] if p["name"] == "symbol"
    ]
    schema = symbol["schema"]
    documented = bool(re.fullmatch(schema["pattern"], spelling)) and len(spelling) <= schema["maxLength"]
    try:
        normalize_symbol(spelling)
        served = True
    except InvalidSymbol:
        served = False
    assert documented == served
