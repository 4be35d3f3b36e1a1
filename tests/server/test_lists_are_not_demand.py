"""Reading every streamed symbol (the status page) is no one's use of each: it must not count as
demand, or every on-demand stream would stay forever while anyone watches the status page. A
ticker list without ``symbol`` is the use of the whole market (``<kind>:*``), not of each symbol
streamed on its own. Asking for a symbol by name still counts as its demand."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from contract.keys import DEMAND_KEY, SYMBOLS_KEY
from server import create_app
from tests.server.test_binance_api import BOOK, TICKER, put

LISTS = {"/status.json": None, "/api/v3/ticker/bookTicker": b"bookticker:*",
         "/api/v3/ticker/price": b"ticker:*", "/api/v3/ticker/24hr": b"ticker:*"}  # fmt: skip


@pytest.fixture
def client(fake_redis: redis.Redis) -> FlaskClient:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING"})
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


@pytest.mark.parametrize(("path", "market"), LISTS.items())
def test_a_list_of_everything_counts_as_no_demand_for_each_symbol(
    client: FlaskClient, fake_redis: redis.Redis, path: str, market: bytes | None
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert len(response.get_json()["symbols"] if path == "/status.json" else response.get_json()) == 2
    scores = demand(fake_redis)
    # None of the symbols' own demand refreshed: they still go idle; a ticker list asks for its market.
    assert {m: s for m, s in scores.items() if m != market} == dict.fromkeys(
        (f"{k}:{s}".encode() for k in ("bookticker", "ticker") for s in ("BTCUSDT", "ETHBTC")), LONG_AGO
    )
    assert (market in scores and scores[market] > LONG_AGO) if market else len(scores) == 4


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
