"""``/healthz`` and ``/readyz``, as a load balancer sees them."""

from __future__ import annotations

import time

import orjson
import redis

from contract.keys import MEMBERS_KEY
from server import create_app
from tests.processes import free_port
from tests.records import heartbeat


def test_healthz_is_200_even_without_redis() -> None:
    app = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_503_without_redis() -> None:
    app = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"].startswith("redis does not answer")


def test_readyz_is_503_without_a_messenger_heartbeat(fake_redis: redis.Redis) -> None:
    response = create_app(client=fake_redis).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "reason": "no fresh messenger heartbeat"}


def test_readyz_is_200_with_a_fresh_heartbeat_and_says_how_much_is_fresh(fake_redis: redis.Redis) -> None:
    beat = {
        "pid": 1,
        "connections": 2,
        "streams": 10,
        "tracked": 8,
        "fresh": 6,
        "ts": int(time.time() * 1000),
    }
    heartbeat(fake_redis, orjson.dumps(beat), px=5000)
    body = create_app(client=fake_redis).test_client().get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["fresh_share"] == 0.75
    assert body["messenger"]["connections"] == 2
    assert 0 <= body["heartbeat_age_ms"] < 1000


def beat(**fields: object) -> bytes:
    """A messenger heartbeat as it writes it."""
    doc = {"connections": 1, "live_connections": 1, "streams_wanted": 2, "streams": 2, "tracked": 2,
           "fresh": 2, "redis": True, "catalog_symbols": 1695, "binance": "connected", "binance_errors": [],
           "ts": int(time.time() * 1000), **fields}  # fmt: skip
    return orjson.dumps(doc)


def test_readyz_is_503_while_the_messenger_has_no_live_connection_and_says_why(
    fake_redis: redis.Redis,
) -> None:
    error = "wss://stream.binance.com:9443: connect failed: [Errno -2] Name or service not known"
    heartbeat(fake_redis, beat(live_connections=0, binance="unreachable", binance_errors=[error]))
    response = create_app(client=fake_redis).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["reason"] == f"the messenger has no live connection to Binance (Binance unreachable: {error})"
    assert body["messenger"]["binance"] == "unreachable"


def test_readyz_is_503_until_the_messenger_has_the_symbol_list(fake_redis: redis.Redis) -> None:
    heartbeat(fake_redis, beat(catalog_symbols=0))
    response = create_app(client=fake_redis).test_client().get("/readyz")
    assert (response.status_code, response.get_json()["reason"]) == (
        503,
        "the messenger has no symbol list from Binance yet",
    )


def test_readyz_is_200_with_a_live_connection_and_the_symbol_list(fake_redis: redis.Redis) -> None:
    heartbeat(fake_redis, beat())
    assert create_app(client=fake_redis).test_client().get("/readyz").status_code == 200


def test_readyz_with_several_members_is_200_once_all_are_heard_and_spread_streams_alike(
    fake_redis: redis.Redis,
) -> None:
    app = create_app(client=fake_redis).test_client()
    heartbeat(fake_redis, beat(view=["a", "b"], streams=3), name="a")
    heartbeat(fake_redis, beat(view=["a"], streams=1), name="b")
    response = app.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "member b is still taking over streams (members changed)"
    heartbeat(fake_redis, beat(view=["a", "b"], streams=2), name="b")
    response = app.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert [m["member"] for m in body["members"]] == ["a", "b"]
    assert body["messenger"]["member"] == "a"


def test_readyz_is_503_while_a_live_member_is_not_heard_from_and_names_it(fake_redis: redis.Redis) -> None:
    heartbeat(fake_redis, beat(view=["a", "b"]), name="a")
    fake_redis.zadd(MEMBERS_KEY, {"b": int(time.time() * 1000) + 5000})  # registered, heartbeat lapsed
    response = create_app(client=fake_redis).test_client().get("/readyz")
    assert (response.status_code, response.get_json()["reason"]) == (
        503,
        "member b is not heard from; its streams move to the others",
    )


def test_readyz_ignores_a_leaving_members_view_and_names_a_member_that_is_not_ready(
    fake_redis: redis.Redis,
) -> None:
    heartbeat(fake_redis, beat(view=["a", "b"]), name="a")
    heartbeat(fake_redis, beat(view=["a", "b"], live_connections=0), name="b")
    heartbeat(fake_redis, beat(view=[], leaving=True), name="c")
    response = create_app(client=fake_redis).test_client().get("/readyz")
    assert (response.status_code, response.get_json()["reason"]) == (
        503,
        "the messenger has no live connection to Binance (member b of 2)",
    )
