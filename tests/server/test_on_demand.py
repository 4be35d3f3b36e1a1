"""Symbols that are not streamed yet: unknown, not trading, no catalog, and on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.keys import DEMAND_CHANNEL, DEMAND_KEY, LIVE, PENDING, SYMBOLS_KEY, snapshot_key
from contract.servable import servable
from server import create_app
from server.store import Decode
from tests.records import stream_state, vouched
from tests.server.test_snapshot import record

BNB = snapshot_key("bookticker", "bnbbtc")


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "BNBBTC": "TRADING", "ETHBTC": "BREAK"})
    return create_app({"demand_wait_ms": 300}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def wake_ups(fake_redis: redis.Redis) -> Callable[[], list[bytes]]:
    """The demand wake-ups published from now on."""
    pubsub = fake_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(DEMAND_CHANNEL)

    def published() -> list[bytes]:
        messages = []
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.05)
            if message is not None:
                messages.append(message["data"])
        return messages

    return published


def test_an_unknown_symbol_is_404_with_the_closest_listed_one(client: FlaskClient) -> None:
    response = client.post("/snapshot/BTC_USD")
    assert response.status_code == 404
    assert response.get_json() == {
        "status_code": 404,
        "error": "Unknown symbol BTCUSD. Did you mean BTCUSDT?",
    }
    assert client.post("/snapshot/QQQQQQ").get_json()["error"] == "Unknown symbol QQQQQQ."


def test_a_listed_symbol_that_does_not_trade_is_409_naming_its_status(client: FlaskClient) -> None:
    response = client.post("/snapshot/ETH_BTC")
    assert response.status_code == 409
    assert response.get_json() == {"status_code": 409, "error": "ETHBTC is not trading (status BREAK)."}


def test_no_symbol_list_yet_is_503(fake_redis: redis.Redis, client: FlaskClient) -> None:
    fake_redis.delete(SYMBOLS_KEY)
    response = client.post("/snapshot/BNB_BTC")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "symbol list" in response.get_json()["error"]


def test_a_trading_symbol_nobody_streams_is_asked_for_and_answers_503_if_nothing_comes(
    fake_redis: redis.Redis, client: FlaskClient, wake_ups: Callable[[], list[bytes]]
) -> None:
    started = time.monotonic()
    response = client.post("/snapshot/BNB_BTC")
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"] == "BNBBTC is being subscribed; try again in a moment."
    assert 0.3 <= waited < 1.0
    assert fake_redis.zscore(DEMAND_KEY, "bookticker:BNBBTC") is not None
    assert wake_ups() == [b"bookticker:BNBBTC"]


def test_the_first_value_that_arrives_while_waiting_is_answered(
    fake_redis: redis.Redis, client: FlaskClient
) -> None:
    def messenger() -> None:
        time.sleep(0.1)  # the messenger subscribing and seeding
        vouched(fake_redis, BNB, record(symbol="BNBBTC", source="rest"), px=1000)

    thread = threading.Thread(target=messenger)
    thread.start()
    response = client.post("/snapshot/bnbbtc")
    thread.join()
    assert response.status_code == 200
    assert response.get_json()["symbol"] == "BNBBTC"


def test_a_symbol_being_subscribed_is_waited_for_without_asking_again(
    fake_redis: redis.Redis, client: FlaskClient, wake_ups: Callable[[], list[bytes]]
) -> None:
    stream_state(fake_redis, BNB, PENDING)
    assert client.post("/snapshot/BNBBTC").status_code == 503
    assert wake_ups() == []


def test_a_symbol_in_use_is_counted_as_demand_now_and_then(
    fake_redis: redis.Redis, client: FlaskClient
) -> None:
    vouched(fake_redis, snapshot_key("bookticker", "btcusdt"), record(), px=5000)
    fake_redis.zadd(DEMAND_KEY, {"bookticker:BTCUSDT": 1})  # asked for on demand, long ago
    assert client.post("/snapshot/BTCUSDT").status_code == 200
    first: Any = fake_redis.zscore(DEMAND_KEY, "bookticker:BTCUSDT")
    assert first > time.time() * 1000 - 5000
    time.sleep(0.01)
    assert client.post("/snapshot/BTCUSDT").status_code == 200
    assert fake_redis.zscore(DEMAND_KEY, "bookticker:BTCUSDT") == first  # not on every request


def test_reading_a_value_never_adds_demand_only_admission_does(
    fake_redis: redis.Redis, client: FlaskClient
) -> None:
    """A value served (a pinned symbol's, say) is not turned into on-demand streams: only the
    admission of a new stream adds to the demand set, within its limits."""
    vouched(fake_redis, snapshot_key("bookticker", "btcusdt"), record(), px=5000)
    assert client.post("/snapshots", json={"symbols": ["BTCUSDT", "BNBBTC"]}).status_code == 503
    assert fake_redis.zrange(DEMAND_KEY, 0, -1) == [b"bookticker:BNBBTC"]


def test_a_first_value_written_between_two_reads_is_served_not_called_stale(fake_redis: redis.Redis) -> None:
    from server import lookup
    from server.store import SnapshotStore

    class ReadJustBeforeTheWrite(SnapshotStore):
        """The request's first read misses; the messenger then writes the value, then 'live'."""

        def snapshots(
            self,
            kind: str,
            symbols: list[str],
            touch: bool = True,
            decode: Decode = servable,
            also: Any = None,
        ) -> list[Any]:
            missed = super().snapshots(kind, symbols, touch, decode, also)
            vouched(fake_redis, BNB, record(symbol="BNBBTC"), px=1000)
            stream_state(fake_redis, BNB, LIVE)
            return [None for _ in missed]

    stream_state(fake_redis, BNB, PENDING)
    [found] = lookup.current(ReadJustBeforeTheWrite(fake_redis), "bookticker", ["BNBBTC"], None, 0.0)
    assert found["symbol"] == "BNBBTC"


def test_a_streamed_symbol_without_a_value_is_stale_even_before_the_symbol_list_is_known(
    fake_redis: redis.Redis, client: FlaskClient
) -> None:
    fake_redis.delete(SYMBOLS_KEY)  # the messenger died before writing the list, after a first value
    stream_state(fake_redis, BNB, LIVE)
    response = client.post("/snapshot/BNBBTC")
    assert response.status_code == 500
    assert response.get_json()["error"].startswith("No current data for BNBBTC")
