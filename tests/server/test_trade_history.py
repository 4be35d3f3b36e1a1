"""Reading kept trade lists: only whole ranges, the present only while vouched for, holes fetched."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from contract.backfill import BACKFILL_KEY, Backfill
from contract.keys import EXCHANGE_INFO_KEY, LIVE, SYMBOLS_KEY, key_tag, snapshot_key, voucher_key
from contract.trade_history import backfilled_key, origin_key, tail_key
from server import create_app
from server.trade_history import BY_TIME, FETCH, FROM_ID, OK, RECENT, STALE, WAIT, Query, TradeHistoryStore
from tests.records import RUN, stream_state, vouched

RECORD = snapshot_key("aggtrade", "btcusdt")


def at(n: int) -> int:
    """The time of trade ``n``."""
    return 1_000_000 + 10 * n


def agg(n: int) -> dict[str, Any]:
    """Aggregate trade ``n``: one every 10 ms from t=1,000,000 (so trade n is at 1,000,000 + 10 n)."""
    return {"a": n, "p": "100.00000000", "q": "0.50000000", "f": n, "l": n, "T": at(n),
            "m": True, "M": True}  # fmt: skip


def keep(client: redis.Redis, key: str, numbers: range | list[int]) -> None:
    client.zadd(key, {orjson.dumps(agg(n)): n for n in numbers})


def stream_at(client: redis.Redis, newest: int) -> None:
    """The aggTrade stream is vouched for, its newest trade ``newest``."""
    now = int(time.time() * 1000)
    record = {"symbol": "BTCUSDT", "agg_trade_id": newest, "ts": now, "as_of": now, "source": "stream"}
    vouched(client, RECORD, record, px=5000)
    stream_state(client, RECORD, LIVE)


def lapse(client: redis.Redis) -> None:
    client.delete(voucher_key(RUN, 1, key_tag(RECORD)))


def got(answer: Any) -> list[int]:
    return [orjson.loads(item)["a"] for item in answer.items]


@pytest.fixture
def kept(any_redis: redis.Redis) -> TradeHistoryStore:
    """Trades 1000 to 1999 are the tail, 300 to 399 and 500 to 599 were fetched before; 1999 streamed."""
    keep(any_redis, tail_key("aggtrade", "BTCUSDT"), range(1000, 2000))
    keep(any_redis, backfilled_key("aggtrade", "BTCUSDT"), [*range(300, 400), *range(500, 600)])
    stream_at(any_redis, 1999)
    return TradeHistoryStore(any_redis)


def read(store: TradeHistoryStore, query: Query) -> Any:
    return store.read("aggtrade", "BTCUSDT", query)


def test_the_most_recent_while_vouched_for_and_caught_up(
    any_redis: redis.Redis, kept: TradeHistoryStore
) -> None:
    answer = read(kept, Query(RECENT, 50))
    assert (answer.status, got(answer)) == (OK, list(range(1950, 2000)))
    assert answer.items[0] == orjson.dumps(agg(1950))  # exactly what was stored
    assert got(read(kept, Query(RECENT, 1000))) == list(range(1000, 2000))
    stream_at(any_redis, 2001)  # the stream is ahead of the tail: the newest is not held yet
    assert read(kept, Query(RECENT, 50)).status == WAIT
    lapse(any_redis)
    assert read(kept, Query(RECENT, 50)).status == STALE


def test_the_most_recent_while_either_of_two_messengers_vouches(any_redis: redis.Redis) -> None:
    keep(any_redis, tail_key("aggtrade", "BTCUSDT"), range(1000, 2000))
    other = voucher_key("otherrun", 1, key_tag(RECORD))
    any_redis.set(other, 1)
    now = int(time.time() * 1000)
    record = {"symbol": "BTCUSDT", "agg_trade_id": 1999, "ts": now, "as_of": now, "source": "stream"}
    vouched(any_redis, RECORD, record, px=5000, others=(other,))
    store = TradeHistoryStore(any_redis)
    lapse(any_redis)  # the first messenger was killed: the other still vouches
    assert got(read(store, Query(RECENT, 5))) == list(range(1995, 2000))
    any_redis.delete(other)
    assert read(store, Query(RECENT, 5)).status == STALE


def test_a_tail_the_stream_started_is_waited_for_while_the_messenger_fills_it(
    any_redis: redis.Redis, kept: TradeHistoryStore
) -> None:
    any_redis.zremrangebyscore(tail_key("aggtrade", "BTCUSDT"), 0, 1899)  # a first frame beat the seed
    assert read(kept, Query(RECENT, 500)).status == WAIT
    assert read(kept, Query(FROM_ID, 10, 1850)).status == WAIT
    assert read(kept, Query(BY_TIME, 10, start_ms=at(1850))).status == WAIT
    assert read(kept, Query(FROM_ID, 10, 700)).fetch == Backfill("aggtrade", "BTCUSDT", 700)  # older: asked
    assert got(read(kept, Query(RECENT, 100))) == list(range(1900, 2000))


def test_a_range_wholly_in_the_past_is_history_whatever_the_connection(
    any_redis: redis.Redis, kept: TradeHistoryStore
) -> None:
    lapse(any_redis)
    for query, expected in [
        (Query(FROM_ID, 100, 300), range(300, 400)),
        (Query(FROM_ID, 10, 1950), range(1950, 1960)),
        (Query(BY_TIME, 5, start_ms=at(320) - 3), range(320, 325)),
        (Query(BY_TIME, 1000, start_ms=at(320), end_ms=at(330)), range(320, 331)),
        (Query(BY_TIME, 3, end_ms=at(1960) + 5), range(1958, 1961)),
    ]:
        answer = read(kept, query)
        assert (answer.status, got(answer)) == (OK, list(expected)), query


def test_a_range_that_runs_up_to_now_needs_the_stream(
    any_redis: redis.Redis, kept: TradeHistoryStore
) -> None:
    answer = read(kept, Query(FROM_ID, 100, 1990))
    assert (answer.status, got(answer)) == (OK, list(range(1990, 2000)))  # nothing newer exists
    assert got(read(kept, Query(FROM_ID, 100, 5000))) == []  # Binance: [] past the newest
    assert got(read(kept, Query(BY_TIME, 100, start_ms=10**12))) == []
    lapse(any_redis)
    assert read(kept, Query(FROM_ID, 100, 1990)).status == STALE
    assert read(kept, Query(BY_TIME, 100, start_ms=10**12)).status == STALE
    assert read(kept, Query(BY_TIME, 100, end_ms=10**12)).status == STALE


def test_holes_are_never_served_as_if_whole(kept: TradeHistoryStore) -> None:
    cases = [
        (Query(FROM_ID, 100, 350), Backfill("aggtrade", "BTCUSDT", 400)),  # runs into a hole
        (Query(FROM_ID, 100, 450), Backfill("aggtrade", "BTCUSDT", 450)),  # starts in one
        (Query(FROM_ID, 100, 0), Backfill("aggtrade", "BTCUSDT", 0)),  # older than all
        # A time in a hole: where its first trade is cannot be known from what is held.
        (Query(BY_TIME, 10, start_ms=at(450)), Backfill("aggtrade_time", "BTCUSDT", at(450))),
        (Query(BY_TIME, 10, start_ms=at(300)), Backfill("aggtrade_time", "BTCUSDT", at(300))),
        (Query(BY_TIME, 10, end_ms=at(450)), Backfill("aggtrade_time", "BTCUSDT", at(450) + 1)),
        (Query(BY_TIME, 50, end_ms=at(520)), Backfill("aggtrade", "BTCUSDT", 471)),
    ]  # fmt: skip
    for query, wanted in cases:
        answer = read(kept, query)
        assert (answer.status, answer.fetch, answer.items) == (FETCH, wanted, []), query


def test_a_held_boundary_answers_a_time_range_in_a_hole(
    any_redis: redis.Redis, kept: TradeHistoryStore
) -> None:
    keep(any_redis, backfilled_key("aggtrade", "BTCUSDT"), range(400, 500))  # the hole is filled
    answer = read(kept, Query(BY_TIME, 10, start_ms=at(450) - 9))
    assert got(answer) == list(range(450, 460))
    answer = read(kept, Query(BY_TIME, 1000, start_ms=at(300) + 1, end_ms=at(599) - 1))
    assert got(answer) == list(range(301, 599))
    # Up to the time of the last held trade: the next one, not held, may have the same time.
    answer = read(kept, Query(BY_TIME, 1000, start_ms=at(300) + 1, end_ms=at(599)))
    assert answer.fetch == Backfill("aggtrade", "BTCUSDT", 600)


def test_nothing_exists_below_the_origin_so_a_range_reaching_below_it_is_whole_from_it(
    any_redis: redis.Redis, kept: TradeHistoryStore
) -> None:
    """The exchange's first trade is 300 (its answer to fromId=0 began there): as Binance answers,
    fromId=0 and startTime=0 give the first trades, an end before the first trade gives []."""
    any_redis.set(origin_key("aggtrade", "BTCUSDT"), 300)
    lapse(any_redis)  # all of it is history
    for query, expected in [
        (Query(FROM_ID, 5, 0), range(300, 305)),
        (Query(FROM_ID, 100, 299), range(300, 400)),
        (Query(BY_TIME, 5, start_ms=0), range(300, 305)),
        (Query(BY_TIME, 5, start_ms=0, end_ms=at(302)), range(300, 303)),
        (Query(BY_TIME, 10, end_ms=at(302)), range(300, 303)),
        (Query(BY_TIME, 10, end_ms=0), []),
        (Query(BY_TIME, 10, end_ms=at(300) - 1), []),
        (Query(BY_TIME, 10, start_ms=0, end_ms=at(300) - 1), []),
    ]:
        answer = read(kept, query)
        assert (answer.status, got(answer)) == (OK, list(expected)), query
    # Above the origin, a hole is still a hole.
    assert read(kept, Query(FROM_ID, 200, 0)).fetch == Backfill("aggtrade", "BTCUSDT", 400)
    any_redis.delete(origin_key("aggtrade", "BTCUSDT"))  # not known: ids from 0 may exist
    assert read(kept, Query(FROM_ID, 5, 0)).fetch == Backfill("aggtrade", "BTCUSDT", 0)
    assert read(kept, Query(BY_TIME, 10, end_ms=0)).fetch == Backfill("aggtrade_time", "BTCUSDT", 1)


def test_a_tail_that_starts_at_the_origin_is_whole(any_redis: redis.Redis) -> None:
    """A symbol with fewer trades than a tail keeps: all of them are the tail."""
    keep(any_redis, tail_key("aggtrade", "BTCUSDT"), range(700, 1000))
    any_redis.set(origin_key("aggtrade", "BTCUSDT"), 700)
    stream_at(any_redis, 999)
    store = TradeHistoryStore(any_redis)
    assert got(read(store, Query(RECENT, 500))) == list(range(700, 1000))
    assert got(read(store, Query(FROM_ID, 5, 0))) == list(range(700, 705))
    assert got(read(store, Query(BY_TIME, 2, end_ms=at(999)))) == [998, 999]


def test_nothing_kept_and_nothing_streamed_is_stale_then_the_tail_is_waited_for(
    any_redis: redis.Redis,
) -> None:
    store = TradeHistoryStore(any_redis)
    assert read(store, Query(FROM_ID, 10, 5)).status == STALE
    stream_at(any_redis, 10)  # streamed now; the tail is being seeded
    assert read(store, Query(FROM_ID, 10, 5)).status == WAIT
    assert read(store, Query(RECENT, 10)).status == WAIT


# -- the endpoints ---------------------------------------------------------------------


@pytest.fixture
def app(fake_redis: redis.Redis) -> Flask:
    fake_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING"})
    fake_redis.set(EXCHANGE_INFO_KEY, orjson.dumps({"symbols": []}))
    keep(fake_redis, tail_key("aggtrade", "BTCUSDT"), range(1000, 2000))
    stream_at(fake_redis, 1999)
    return create_app({"demand_wait_ms": 100}, client=fake_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_agg_trades_in_binances_shape(client: FlaskClient) -> None:
    response = client.get("/api/v3/aggTrades?symbol=BTCUSDT&limit=3")
    assert response.status_code == 200
    assert response.get_json() == [agg(n) for n in (1997, 1998, 1999)]
    assert len(client.get("/api/v3/aggTrades?symbol=btc_usdt&limit=100").get_json()) == 100
    from_id = client.get("/api/v3/aggTrades?symbol=BTCUSDT&fromId=1995").get_json()
    assert from_id == [agg(n) for n in range(1995, 2000)]
    start, end = at(1950), at(1952)
    by_time = client.get(f"/api/v3/aggTrades?symbol=BTCUSDT&startTime={start}&endTime={end}").get_json()
    assert by_time == [agg(n) for n in (1950, 1951, 1952)]


def test_an_older_range_is_asked_of_the_messenger_and_answered_503_if_it_does_not_come(
    fake_redis: redis.Redis, client: FlaskClient
) -> None:
    started = time.monotonic()
    response = client.get("/api/v3/aggTrades?symbol=BTCUSDT&fromId=10&limit=5")
    assert 0.1 <= time.monotonic() - started < 1
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.get_json()["code"] == -1001
    assert fake_redis.zrange(BACKFILL_KEY, 0, -1) == [b"aggtrade:BTCUSDT:10"]


def test_an_older_range_that_arrives_while_waiting_is_answered(fake_redis: redis.Redis, app: Flask) -> None:
    keep(fake_redis, backfilled_key("aggtrade", "BTCUSDT"), range(10, 15))
    response = app.test_client().get("/api/v3/aggTrades?symbol=BTCUSDT&fromId=10&limit=5")
    assert response.get_json() == [agg(n) for n in range(10, 15)]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("fromId=5&startTime=1", -1128),
        ("fromId=5&endTime=1", -1128),
        ("startTime=5&endTime=4", -1023),
        ("fromId=-1", -1100),
        ("startTime=1e3", -1100),
        ("limit=1001", -1130),
        ("limit=0", -1130),
    ],
)
def test_binances_rules_for_the_parameters(client: FlaskClient, query: str, code: int) -> None:
    response = client.get(f"/api/v3/aggTrades?symbol=BTCUSDT&{query}")
    assert response.status_code == 400
    assert response.get_json()["code"] == code


def test_an_unknown_symbol_is_never_asked_for(fake_redis: redis.Redis, client: FlaskClient) -> None:
    response = client.get("/api/v3/aggTrades?symbol=NOPEUSDT&fromId=10")
    assert (response.status_code, response.get_json()["code"]) == (400, -1121)
    assert fake_redis.zcard(BACKFILL_KEY) == 0
    assert client.get("/api/v3/historicalTrades").get_json()["code"] == -1102


def test_historical_trades_from_an_id(fake_redis: redis.Redis, client: FlaskClient) -> None:
    trade = {"id": 7, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.00001200", "time": 77,
             "isBuyerMaker": False, "isBestMatch": True}  # fmt: skip
    fake_redis.zadd(
        backfilled_key("trade", "ETHBTC"), {orjson.dumps({**trade, "id": n}): n for n in range(5, 9)}
    )
    fake_redis.zadd(tail_key("trade", "ETHBTC"), {orjson.dumps({**trade, "id": 9}): 9})
    answer = client.get("/api/v3/historicalTrades?symbol=ETHBTC&fromId=6&limit=2").get_json()
    assert answer == [{**trade, "id": 6}, {**trade, "id": 7}]
