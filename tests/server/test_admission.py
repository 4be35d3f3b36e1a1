"""Admission of new on-demand streams: the cap, the rate per client, and the 429 both APIs answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.keys import DEMAND_CHANNEL, DEMAND_KEY, SYMBOLS_KEY, snapshot_key
from contract.settings import Settings
from server import create_app
from server.admission import CAP, CLIENT_RATE, Admission, Refused, client_address
from tests.records import vouched
from tests.server.test_snapshot import record

NOW = 1_700_000_000.0
IDLE_S = 300


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def gate(client: redis.Redis, clock: Clock, **settings: Any) -> Admission:
    return Admission(client, Settings.from_env({}, demand_idle_s=IDLE_S, **settings), clock)


def demanded(client: redis.Redis) -> list[str]:
    members: Any = client.zrange(DEMAND_KEY, 0, -1)
    return sorted(m.decode() for m in members)


def refusal(call: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call()
    return caught.value


def test_new_streams_are_admitted_up_to_the_cap_then_refused_until_one_goes_idle(
    any_redis: redis.Redis,
) -> None:
    clock = Clock()
    admission = gate(any_redis, clock, demand_max_streams=3)
    assert admission.demand("bookticker", ["AAA", "BBB"], "10.0.0.1") == 2
    clock.now += 100
    assert admission.demand("trade", ["AAA"], "10.0.0.2") == 1

    refused = refusal(lambda: admission.demand("bookticker", ["CCC"], "10.0.0.3"))
    assert refused.reason == CAP
    assert refused.retry_after_s == IDLE_S - 100  # when the least recently asked two go idle
    assert "at most 3 are carried and 3 are in use" in str(refused)
    assert demanded(any_redis) == ["bookticker:AAA", "bookticker:BBB", "trade:AAA"]

    # Asking again for a stream already carried costs nothing, even at the cap.
    assert admission.demand("bookticker", ["AAA"], "10.0.0.3") == 0
    clock.now = NOW + IDLE_S + 1  # bookticker:BBB, last asked for at NOW, is idle: it no longer counts
    assert admission.demand("bookticker", ["CCC"], "10.0.0.3") == 1
    assert any_redis.zscore(DEMAND_KEY, "bookticker:CCC") == clock.now * 1000


def test_a_request_over_the_cap_registers_none_of_its_streams(any_redis: redis.Redis) -> None:
    admission = gate(any_redis, Clock(), demand_max_streams=3)
    admission.demand("bookticker", ["AAA"], "10.0.0.1")
    assert refusal(lambda: admission.demand("bookticker", ["BBB", "CCC", "DDD"], "10.0.0.1")).reason == CAP
    assert demanded(any_redis) == ["bookticker:AAA"]


def test_each_client_has_its_own_budget_of_new_streams_refilled_over_time(any_redis: redis.Redis) -> None:
    clock = Clock()
    admission = gate(any_redis, clock, demand_client_streams_per_s=2, demand_client_burst=4)
    assert admission.demand("bookticker", ["A1", "A2", "A3"], "10.0.0.1") == 3
    refused = refusal(lambda: admission.demand("bookticker", ["A4", "A5"], "10.0.0.1"))
    assert (refused.reason, refused.retry_after_s) == (CLIENT_RATE, 1)  # one token short, 2 a second
    assert "at most 4 at once and 2 a second" in str(refused)
    assert admission.demand("bookticker", ["B1", "B2", "B3", "B4"], "10.0.0.2") == 4  # another client

    clock.now += 0.5  # one more token
    assert admission.demand("bookticker", ["A4", "A5"], "10.0.0.1") == 2
    assert refusal(lambda: admission.demand("bookticker", ["A6"], "10.0.0.1")).reason == CLIENT_RATE
    assert admission.demand("bookticker", ["A1", "A2"], "10.0.0.1") == 0  # not new: free
    clock.now += 3600  # the bucket is full again, not fuller
    assert admission.demand("bookticker", ["C1", "C2", "C3", "C4"], "10.0.0.1") == 4
    assert refusal(lambda: admission.demand("bookticker", ["C5"], "10.0.0.1")).reason == CLIENT_RATE


def test_a_refusal_by_the_cap_costs_the_client_no_tokens(any_redis: redis.Redis) -> None:
    admission = gate(any_redis, Clock(), demand_max_streams=2, demand_client_burst=2)
    admission.demand("bookticker", ["AAA"], "10.0.0.9")
    assert refusal(lambda: admission.demand("bookticker", ["BBB", "CCC"], "10.0.0.1")).reason == CAP
    any_redis.delete(DEMAND_KEY)  # room again
    assert admission.demand("bookticker", ["BBB", "CCC"], "10.0.0.1") == 2


def test_a_request_for_more_new_streams_than_the_burst_says_to_ask_for_fewer(any_redis: redis.Redis) -> None:
    admission = gate(any_redis, Clock(), demand_client_burst=2, demand_client_streams_per_s=1)
    refused = refusal(lambda: admission.demand("bookticker", ["A", "B", "C"], "10.0.0.1"))
    assert refused.reason == CLIENT_RATE
    assert "at most 2 at once. Ask for fewer symbols." in str(refused)


def test_admitted_demand_wakes_the_messenger(any_redis: redis.Redis) -> None:
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(DEMAND_CHANNEL)
    gate(any_redis, Clock()).demand("bookticker", ["AAA", "BBB"], "10.0.0.1")
    message = pubsub.get_message(timeout=1.0)
    while message is None or message["type"] != "message":
        message = pubsub.get_message(timeout=1.0)
    assert message["data"] == b"bookticker:AAA"
    pubsub.close()


def test_the_client_is_the_socket_peer_unless_proxies_are_trusted() -> None:
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2, 3.3.3.3"}
    assert client_address(environ, 0) == "10.0.0.1"  # a client cannot pick its own address
    assert client_address(environ, 1) == "3.3.3.3"  # what the one proxy saw
    assert client_address(environ, 2) == "2.2.2.2"
    assert client_address(environ, 4) == "10.0.0.1"  # fewer hops than configured: not via them
    assert client_address({"REMOTE_ADDR": "10.0.0.1"}, 1) == "10.0.0.1"


# -- through the APIs -------------------------------------------------------------------------

TRADING = ["BTCUSDT", "ETHBTC", "BNBBTC", "LTCBTC", "NEOBTC"]


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    fake_redis.hset(SYMBOLS_KEY, mapping=dict.fromkeys(TRADING, "TRADING"))
    vouched(fake_redis, snapshot_key("bookticker", "btcusdt"), record(), px=60_000)
    return create_app(
        {"demand_wait_ms": 0, "demand_max_streams": 2, "demand_client_burst": 100}, client=fake_redis
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_over_the_cap_our_api_answers_429_json_with_retry_after(client: FlaskClient) -> None:
    assert client.post("/snapshots", json={"symbols": ["ETHBTC", "BNBBTC"]}).status_code == 503  # subscribing
    response = client.post("/snapshots", json={"symbols": ["BTCUSDT", "LTCBTC"]})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= IDLE_S - 1
    body = response.get_json()
    assert set(body) == {"status_code", "error"}
    assert body["status_code"] == 429
    assert body["error"].startswith("Too many streams on demand: at most 2 are carried and 2 are in use")
    assert client.post("/snapshot/BTCUSDT").status_code == 200  # streamed already: never refused
    assert client.post("/snapshot/ETHBTC").status_code == 503  # admitted already: still waited for


def test_over_the_cap_the_binance_api_answers_429_minus_1003_with_retry_after(client: FlaskClient) -> None:
    assert client.get('/api/v3/ticker/bookTicker?symbols=["ETHBTC","BNBBTC"]').status_code == 503
    for path in ("/api/v3/ticker/bookTicker?symbol=LTCBTC", "/api/v3/depth?symbol=ETHBTC",
                 '/api/v3/ticker/24hr?symbols=["NEOBTC"]'):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 429, path
        assert int(response.headers["Retry-After"]) >= 1
        body = response.get_json()
        assert body["code"] == -1003
        assert set(body) == {"code", "msg"}


def refusals(client: FlaskClient, reason: str) -> float:
    """The server's count of refusals for a reason, from /metrics."""
    sample = f'transmute_on_demand_refusals_total{{reason="{reason}"}} '
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    return next((float(line[len(sample) :]) for line in lines if line.startswith(sample)), 0.0)


def test_every_refusal_is_counted_by_reason(client: FlaskClient) -> None:
    before = refusals(client, CAP)
    client.post("/snapshots", json={"symbols": ["ETHBTC", "BNBBTC"]})
    client.post("/snapshot/LTCBTC")
    client.get("/api/v3/ticker/bookTicker?symbol=NEOBTC")
    assert refusals(client, CAP) == before + 2


def test_a_client_cannot_escape_its_budget_by_naming_another_address(fake_redis: redis.Redis) -> None:
    fake_redis.hset(SYMBOLS_KEY, mapping=dict.fromkeys(TRADING, "TRADING"))
    app = create_app({"demand_wait_ms": 0, "demand_client_burst": 1}, client=fake_redis)
    client = app.test_client()
    assert client.post("/snapshot/ETHBTC").status_code == 503  # its one new stream, subscribing
    spoofed = client.post("/snapshot/BNBBTC", headers={"X-Forwarded-For": "10.9.9.9"})
    assert spoofed.status_code == 429
    assert spoofed.get_json()["error"].startswith("Too many new streams from this client")
    other = client.post("/snapshot/BNBBTC", environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert other.status_code == 503  # another peer has its own budget


def test_symbols_lists_on_the_binance_api_are_capped_as_on_snapshots(client: FlaskClient) -> None:
    names = orjson.dumps([f"SYM{n}BTC" for n in range(101)]).decode()
    response = client.get(f"/api/v3/ticker/bookTicker?symbols={names}")
    assert response.status_code == 400
    assert response.get_json() == {
        "code": -1101,
        "msg": "Too many values for parameter 'symbols'; at most 100.",
    }
