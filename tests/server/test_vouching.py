"""A record is served only while the connection it names is live, on fakeredis and a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from flask import Flask

from contract.keys import LIVE, SYMBOLS_KEY, key_tag, voucher_key
from server import create_app
from server.store import TOUCH_EVERY_S, SnapshotStore
from tests.records import RUN, stream_state, vouched
from tests.server.test_snapshot import KEY, record


@pytest.fixture
def app(any_redis: redis.Redis) -> Flask:
    any_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING"})
    stream_state(any_redis, KEY, LIVE)
    return create_app({"demand_wait_ms": 100}, client=any_redis)


def post(app: Flask) -> Any:
    return app.test_client().post("/snapshot/BTC_USDT")


def test_a_record_whose_connection_is_gone_is_stale_not_served(app: Flask, any_redis: redis.Redis) -> None:
    vouched(any_redis, KEY, record(connection=3))
    assert post(app).status_code == 200
    any_redis.delete(voucher_key(RUN, 3, key_tag(KEY)))  # its liveness lapsed; the record stays
    answer = post(app)
    assert answer.status_code == 500
    assert "bid_price" not in answer.get_json()


def test_as_of_is_the_connections_last_word_and_the_voucher_is_not_served(
    app: Flask, any_redis: redis.Redis
) -> None:
    doc = record(connection=2)
    vouched(any_redis, KEY, doc)
    heard = int(time.time() * 1000) - 20
    any_redis.set(voucher_key(RUN, 2, key_tag(KEY)), heard)  # spoke after the record was written
    body = post(app).get_json()
    assert body["as_of"] == heard > doc["as_of"]
    assert "voucher" not in body
    assert body["ts"] == doc["ts"]


def test_a_record_naming_no_voucher_is_never_served(app: Flask, any_redis: redis.Redis) -> None:
    any_redis.set(KEY, b'{"symbol":"BTCUSDT","as_of":1,"ts":1}')  # an old-format or foreign record
    assert post(app).status_code == 500


def test_per_symbol_bookkeeping_does_not_grow_with_every_symbol_ever_asked(
    fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(fake_redis)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    for n in range(5000):
        store.snapshots("bookticker", [f"NOPE{n}USDT"])
        clock[0] += 0.01  # 100 distinct symbols a second, never the same twice
    assert len(store._touched) <= 100 / TOUCH_EVERY_S * 2 + 1


def test_a_record_two_messengers_vouch_for_is_served_while_either_lives(
    app: Flask, any_redis: redis.Redis
) -> None:
    """Replicas: the record names both; ``as_of`` is the latest word of a live one."""
    other = voucher_key("otherrun", 1, key_tag(KEY))
    doc = record(connection=1)
    vouched(any_redis, KEY, doc, others=(other,))
    heard = int(time.time() * 1000) - 10
    any_redis.set(other, heard)
    body = post(app).get_json()
    assert body["as_of"] == heard > doc["as_of"]
    assert "voucher" not in body and "order" not in body
    any_redis.delete(other)  # that messenger was killed: the first still vouches
    body = post(app).get_json()
    assert body["bid_price"] == doc["bid_price"] and body["as_of"] == doc["as_of"]
    any_redis.set(other, heard)
    any_redis.delete(voucher_key(RUN, 1, key_tag(KEY)))  # the first was killed instead
    assert post(app).get_json()["as_of"] == heard
    any_redis.delete(other)
    assert post(app).status_code == 500
