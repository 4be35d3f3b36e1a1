"""Reading every streamed symbol (the status page, a ticker list without ``symbol``) is no one's
use of each: it must not count as demand, or every on-demand stream would stay forever while
anyone watches the status page. Asking for a symbol by name still does."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from contract.keys import DEMAND_KEY
from server import create_app
from tests.server.test_binance_api import BOOK, TICKER, put

LISTS = ["/status.json", "/api/v3/ticker/bookTicker", "/api/v3/ticker/price", "/api/v3/ticker/24hr"]


@pytest.fixture
def client(fake_redis: redis.Redis) -> FlaskClient:
    for symbol in ("BTCUSDT", "ETHBTC"):
        put(fake_redis, "bookticker", symbol, **BOOK)
        put(fake_redis, "ticker", symbol, **TICKER)
        # Both streamed on demand, last asked for long ago: about to go idle.
        fake_redis.zadd(DEMAND_KEY, {f"bookticker:{symbol}": LONG_AGO, f"ticker:{symbol}": LONG_AGO})
    return create_app(client=fake_redis).test_client()


LONG_AGO = 1


def demand(client: redis.Redis) -> dict[bytes, float]:
    rows: Any = client.zrange(DEMAND_KEY, 0, -1, withscores=True)
    return dict(rows)


@pytest.mark.parametrize("path", LISTS)
def test_a_list_of_everything_streamed_counts_as_no_demand(
    client: FlaskClient, fake_redis: redis.Redis, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert len(response.get_json()["symbols"] if path == "/status.json" else response.get_json()) == 2
    assert set(demand(fake_redis).values()) == {LONG_AGO}  # none refreshed: they still go idle


@pytest.mark.parametrize(
    ("path", "member"),
    [
        ("/api/v3/ticker/bookTicker?symbol=ETHBTC", b"bookticker:ETHBTC"),
        ("/api/v3/ticker/price?symbol=ETHBTC", b"ticker:ETHBTC"),
    ],
)
def test_asking_for_a_symbol_by_name_still_counts_as_its_demand(
    client: FlaskClient, fake_redis: redis.Redis, path: str, member: bytes
) -> None:
    assert client.get(path).status_code == 200
    refreshed = {m for m, score in demand(fake_redis).items() if score > LONG_AGO}
    assert refreshed == {member}
