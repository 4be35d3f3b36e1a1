"""``GET /api/v3/exchangeInfo``: 1.9 MB for Binance's symbol list, so conditional requests
(ETag, If-None-Match -> 304) and gzip for clients that accept it, compressed once per version."""

from __future__ import annotations

import gzip
import time
import zlib
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import redis
from flask.testing import FlaskClient

from contract.keys import EXCHANGE_INFO_KEY
from server import create_app, exchange_info
from simulator.config import EXCHANGE_INFO_FIXTURE

RECORDED: dict[str, Any] = orjson.loads(EXCHANGE_INFO_FIXTURE.read_bytes())  # 1,695 symbols, 1.86 MB
GZIP = {"Accept-Encoding": "gzip, deflate"}


def stored(client: redis.Redis, **changes: Any) -> dict[str, Any]:
    """Write the recorded document (with changes) as the messenger does; returns it."""
    doc = {**RECORDED, **changes, "serverTime": time.time_ns()}  # a version no other test used
    client.set(EXCHANGE_INFO_KEY, orjson.dumps(doc))
    return doc


def body_of(response: Any) -> dict[str, Any]:
    data = response.data
    if response.headers.get("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    doc: dict[str, Any] = orjson.loads(data)
    return doc


def same_document(served: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Equal but for serverTime, which is the time of the answer."""
    assert abs(served["serverTime"] - time.time() * 1000) < 5000
    return {k: v for k, v in served.items() if k != "serverTime"} == {
        k: v for k, v in doc.items() if k != "serverTime"
    }


@pytest.fixture
def client(fake_redis: redis.Redis) -> FlaskClient:
    return create_app(client=fake_redis).test_client()


@pytest.fixture
def compressions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the server starts compressing a whole document."""
    made: list[int] = []

    def counted(*args: Any) -> Any:
        made.append(1)
        return zlib.compressobj(*args)

    monkeypatch.setattr(exchange_info, "zlib", SimpleNamespace(compressobj=counted, DEFLATED=zlib.DEFLATED))
    return made


def test_a_client_that_accepts_gzip_gets_the_document_gzipped(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    doc = stored(fake_redis)
    response = client.get("/api/v3/exchangeInfo", headers=GZIP)
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert len(response.data) < len(orjson.dumps(doc)) / 20  # 56 KB instead of 1.86 MB
    assert same_document(body_of(response), doc)


@pytest.mark.parametrize("accept", [None, "identity", "br", "gzip;q=0"])
def test_a_client_that_does_not_gets_it_as_it_is(
    client: FlaskClient, fake_redis: redis.Redis, accept: str | None
) -> None:
    doc = stored(fake_redis)
    response = client.get("/api/v3/exchangeInfo", headers={"Accept-Encoding": accept} if accept else {})
    assert response.status_code == 200
    assert "Content-Encoding" not in response.headers
    assert same_document(orjson.loads(response.data), doc)


def test_if_none_match_gets_a_304_until_the_document_changes(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    stored(fake_redis)
    etag = client.get("/api/v3/exchangeInfo").headers["ETag"]
    assert etag.startswith('W/"')  # weak: serverTime differs between answers
    again = client.get("/api/v3/exchangeInfo", headers={"If-None-Match": etag, **GZIP})
    assert (again.status_code, again.data, again.headers["ETag"]) == (304, b"", etag)

    changed = stored(fake_redis, timezone="UTC+1")  # the messenger fetched a new version
    response = client.get("/api/v3/exchangeInfo", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["ETag"] != etag
    assert same_document(orjson.loads(response.data), changed)


def test_some_symbols_have_their_own_etag_and_are_gzipped_when_large(
    client: FlaskClient, fake_redis: redis.Redis
) -> None:
    stored(fake_redis)
    one = client.get('/api/v3/exchangeInfo?symbols=["ETHBTC"]', headers=GZIP)
    two = client.get('/api/v3/exchangeInfo?symbols=["ETHBTC","BNBBTC"]', headers=GZIP)
    assert [s["symbol"] for s in body_of(two)["symbols"]] == ["ETHBTC", "BNBBTC"]
    assert body_of(one)["rateLimits"] == RECORDED["rateLimits"]
    assert one.headers["ETag"] != two.headers["ETag"]
    assert (
        client.get(
            '/api/v3/exchangeInfo?symbols=["ETHBTC"]', headers={"If-None-Match": one.headers["ETag"]}
        ).status_code
        == 304
    )
    assert (
        client.get("/api/v3/exchangeInfo?symbol=ETHBTC", headers=GZIP).headers["ETag"] == one.headers["ETag"]
    )
    assert client.get("/api/v3/exchangeInfo?symbol=NOPE").get_json() == {
        "code": -1121,
        "msg": "Invalid symbol.",
    }


def test_the_document_is_compressed_once_per_version_not_per_request(
    client: FlaskClient, fake_redis: redis.Redis, compressions: list[int]
) -> None:
    stored(fake_redis)
    bodies = [body_of(client.get("/api/v3/exchangeInfo", headers=GZIP)) for _ in range(5)]
    assert len(compressions) == 1
    assert all(same_document(b, bodies[0]) for b in bodies)
    stored(fake_redis, timezone="UTC+1")
    assert body_of(client.get("/api/v3/exchangeInfo", headers=GZIP))["timezone"] == "UTC+1"
    assert len(compressions) == 2


def test_an_unusable_stored_document_is_503_not_a_crash(client: FlaskClient, fake_redis: redis.Redis) -> None:
    fake_redis.set(EXCHANGE_INFO_KEY, b"[1, 2]")
    response = client.get("/api/v3/exchangeInfo")
    assert response.status_code == 503
    assert response.get_json()["code"] == -1001
