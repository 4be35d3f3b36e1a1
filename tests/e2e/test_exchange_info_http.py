"""``GET /api/v3/exchangeInfo`` over real HTTP from gunicorn: gzip for clients that ask for it
(requests, and so Binance's own binance-connector, always do), 304 for a known version, and
the same document for every client."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import requests
from binance.spot import Spot

from contract.keys import EXCHANGE_INFO_KEY
from simulator.config import EXCHANGE_INFO_FIXTURE
from tests.processes import Gunicorn, http

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

RAW = EXCHANGE_INFO_FIXTURE.read_bytes()  # Binance's, 1,695 symbols: 1.86 MB
RECORDED = {k: v for k, v in orjson.loads(RAW).items() if k != "serverTime"}


def without_time(doc: dict[str, Any]) -> dict[str, Any]:
    """The document but its serverTime, which must be the time of the answer."""
    assert abs(doc["serverTime"] - time.time() * 1000) < 5000
    return {k: v for k, v in doc.items() if k != "serverTime"}


def test_exchange_info_is_gzipped_for_requests_and_binance_connector(
    gunicorn: Gunicorn, real_redis: Any
) -> None:
    real_redis.set(EXCHANGE_INFO_KEY, RAW)
    url = f"{gunicorn.url}/api/v3/exchangeInfo"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) < len(RAW) / 20  # what went over the wire
    assert without_time(response.json()) == without_time(
        orjson.loads(RAW) | {"serverTime": time.time() * 1000}
    )

    client = Spot(base_url=gunicorn.url, timeout=10)  # Binance's own client
    info = client.exchange_info()
    assert len(info["symbols"]) == 1695
    assert [s["symbol"] for s in client.exchange_info(symbols=["ETHBTC", "BNBBTC"])["symbols"]] == [
        "ETHBTC",
        "BNBBTC",
    ]

    status, headers, plain = http("GET", url)  # urllib asks for no encoding: it gets none
    assert (status, headers.get("Content-Encoding")) == (200, None)
    assert without_time(plain) == without_time(info) == RECORDED


def test_a_client_with_the_current_version_gets_a_304(gunicorn: Gunicorn, real_redis: Any) -> None:
    real_redis.set(EXCHANGE_INFO_KEY, RAW)
    url = f"{gunicorn.url}/api/v3/exchangeInfo"
    etag = requests.get(url, timeout=10).headers["ETag"]
    # Both workers prepared the same version: the ETag is the document's, not the process's.
    for _ in range(4):
        again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
        assert (again.status_code, again.content) == (304, b"")
    real_redis.set(EXCHANGE_INFO_KEY, orjson.dumps(orjson.loads(RAW) | {"timezone": "UTC+1"}))
    changed = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert changed.status_code == 200
    assert changed.json()["timezone"] == "UTC+1"
