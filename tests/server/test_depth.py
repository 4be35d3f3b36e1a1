"""Full order books served from their records (contract.order_book) on a real redis-server.

Each record is written as the messenger's writer writes it (tests.records.put_book: the voucher
first, the book's fields, then ts, as_of, source, connection), with a live voucher unless a test
says otherwise. Every answer is compared with the naive one: the levels parsed, sliced, dumped.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from contract.keys import LIVE, PENDING, SYMBOLS_KEY, key_tag, snapshot_key, voucher_key
from contract.kinds import DEPTH
from contract.order_book import UNSYNCED_KEY, WANTED_KEY, level_bytes
from server import create_app
from server.books import served
from tests.records import RUN, book_levels, put_book, stream_state

KEY = snapshot_key(DEPTH, "BTCUSDT")


def varied_levels(n: int, side: int, seed: int) -> list[bytes]:
    """Levels whose bytes differ in length (prices across powers of ten, quantities of any size),
    so that a cut in the wrong place shows."""
    rng = random.Random(seed)
    sign = -1 if side == 0 else 1
    out = []
    for i in range(n):
        cents = 99_990 + side * 20 + sign * i * rng.randint(1, 3)
        quantity = f"{rng.randint(0, 10 ** rng.randint(0, 9))}.{rng.randint(0, 99_999_999):08d}"
        out.append(level_bytes(f"{cents // 100}.{cents % 100:02d}", quantity))
    return out


def naive(update_id: int, bids: list[bytes], asks: list[bytes], limit: int) -> bytes:
    """Binance's answer the slow way: every level parsed, the lists sliced, the whole dumped."""
    doc = {
        "lastUpdateId": update_id,
        "bids": [orjson.loads(b) for b in bids][:limit],
        "asks": [orjson.loads(a) for a in asks][:limit],
    }
    return orjson.dumps(doc)


def unavailable(reason: str) -> float:
    return REGISTRY.get_sample_value("transmute_depth_unavailable_total", {"reason": reason}) or 0.0


@pytest.fixture
def app(real_redis: redis.Redis) -> Flask:
    real_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING"})
    stream_state(real_redis, KEY, LIVE)
    return create_app({"demand_wait_ms": 300}, client=real_redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_every_limit_from_1_to_5000_is_the_naive_slice(real_redis: redis.Redis) -> None:
    # 5,000 bids, 3,127 asks: the shorter side's cuts are padded, and every cut is at a level's end.
    bids, asks = varied_levels(5000, 0, seed=1), varied_levels(3127, 1, seed=2)
    put_book(real_redis, "BTCUSDT", bids, asks, levels=5000, limit=5000, update_id=987654321, px=60_000)
    raw, heard = real_redis.get(KEY), real_redis.get(voucher_key(RUN, 1, key_tag(KEY)))
    book = served(raw, heard)
    assert book is not None
    parsed_bids, parsed_asks = [orjson.loads(b) for b in bids], [orjson.loads(a) for a in asks]
    for limit in range(1, 5001):
        expected = orjson.dumps(
            {"lastUpdateId": 987654321, "bids": parsed_bids[:limit], "asks": parsed_asks[:limit]}
        )
        assert book.binance(limit) == expected, limit


@pytest.mark.parametrize(
    "limit", [1, 2, 5, 99, 100, 101, 199, 200, 201, 999, 1000, 1001, 3126, 3127, 3128, 4999, 5000]
)
def test_the_api_answers_the_naive_slice(real_redis: redis.Redis, client: FlaskClient, limit: int) -> None:
    bids, asks = varied_levels(5000, 0, seed=3), varied_levels(3127, 1, seed=4)
    put_book(real_redis, "BTCUSDT", bids, asks, levels=5000, limit=5000, px=60_000)
    response = client.get(f"/api/v3/depth?symbol=BTCUSDT&limit={limit}")
    assert response.status_code == 200
    assert response.get_data() == naive(160, bids, asks, limit)
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "0"
    assert "X-Transmute-Depth-Partial" not in response.headers  # 3,127 asks: the whole side


def test_the_default_is_100_levels_and_over_5000_is_5000(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    bids, asks = book_levels(5000, 0), book_levels(5000, 1)
    put_book(real_redis, "BTCUSDT", bids, asks, levels=5000, limit=5000, px=60_000)
    assert client.get("/api/v3/depth?symbol=btcusdt").get_data() == naive(160, bids, asks, 100)
    for limit in ("5001", "10000", "9" * 20):
        answer = client.get(f"/api/v3/depth?symbol=BTCUSDT&limit={limit}")
        assert answer.get_data() == naive(160, bids, asks, 5000)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("symbol=BTCUSDT&limit=0", -1130),
        ("symbol=BTCUSDT&limit=-1", -1100),
        ("symbol=BTCUSDT&limit=abc", -1100),
        ("symbol=BTCUSDT&limit=1.5", -1100),
        ("symbol=BTCUSDT&limit=", -1100),
        ("symbol=BTCUSDT&limit=" + "9" * 21, -1100),
        ("limit=100", -1102),
        ("symbol=NOPE&limit=5", -1121),
    ],
)
def test_bad_parameters_are_binance_errors(client: FlaskClient, query: str, code: int) -> None:
    response = client.get(f"/api/v3/depth?{query}")
    assert (response.status_code, response.get_json()["code"]) == (400, code)
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "0"


def test_without_its_voucher_a_book_is_503_in_binance_and_500_in_ours(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    put_book(real_redis, "BTCUSDT", book_levels(200, 0), book_levels(200, 1), px=60_000)
    assert client.get("/api/v3/depth?symbol=BTCUSDT").status_code == 200
    real_redis.delete(voucher_key(RUN, 1, key_tag(KEY)))  # the connection that vouches for it is dead
    before = unavailable("not_vouched")
    response = client.get("/api/v3/depth?symbol=BTCUSDT&limit=5")
    assert response.status_code == 503
    assert response.get_json()["code"] == -1001
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "0"
    ours = client.post("/snapshot/BTC_USDT/depth")
    assert ours.status_code == 500
    assert ours.get_json()["error"].startswith("No current data for BTCUSDT")
    assert unavailable("not_vouched") == before + 2


def test_a_book_the_messenger_says_is_resynchronizing_says_so(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    real_redis.hset(UNSYNCED_KEY, "BTCUSDT", "resyncing")  # no record: withdrawn after a gap
    before = unavailable("resyncing")
    response = client.get("/api/v3/depth?symbol=BTCUSDT")
    assert response.status_code == 503
    assert "resynchronizing" in response.get_json()["msg"]
    assert client.post("/snapshot/BTCUSDT/depth").status_code == 500
    assert unavailable("resyncing") == before + 2
    stream_state(real_redis, KEY, PENDING)
    real_redis.hset(UNSYNCED_KEY, "BTCUSDT", "syncing")  # its first snapshot is not applied yet
    response = client.get("/api/v3/depth?symbol=BTCUSDT")
    assert response.status_code == 503
    assert "being synchronized" in response.get_json()["msg"]


def test_a_side_beyond_what_is_known_exactly_is_answered_whole_and_named(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    # Synchronized from a 1,000-level snapshot: 1,000 bids known exactly (more exist), 800 asks
    # (the whole side).
    bids, asks = book_levels(1000, 0), book_levels(800, 1)
    put_book(real_redis, "BTCUSDT", bids, asks, levels=1000, limit=1000, partial=(True, False), px=60_000)
    deep = client.get("/api/v3/depth?symbol=BTCUSDT&limit=5000")
    assert deep.get_data() == naive(160, bids, asks, 5000)
    assert deep.headers["X-Transmute-Depth-Partial"] == "bids"
    exact = client.get("/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert "X-Transmute-Depth-Partial" not in exact.headers
    ours = client.post("/snapshot/BTCUSDT/depth", json={"limit": 4000})
    assert ours.get_json()["partial"] == ["bids"]
    assert ours.headers["X-Transmute-Depth-Partial"] == "bids"


@contextmanager
def writes_tier_when_wanted(client: redis.Redis, bids: list[bytes], asks: list[bytes]) -> Iterator[list[int]]:
    """A stand-in for the messenger: rewrites the book as deep as WANTED_KEY asks (once)."""
    stop, seen = threading.Event(), list[int]()

    def follow() -> None:
        while not stop.wait(0.01):
            wanted: list[bytes] = client.zrange(WANTED_KEY, 0, -1)  # type: ignore[assignment]
            tiers = [int(m.decode().rpartition(":")[2]) for m in wanted if m.startswith(b"BTCUSDT:")]
            if tiers and max(tiers) > 100:
                seen.append(max(tiers))
                put_book(
                    client, "BTCUSDT", bids[: max(tiers)], asks[: max(tiers)], levels=max(tiers), px=60_000
                )
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def test_a_deeper_limit_waits_for_the_deeper_tier_it_registered(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    bids, asks = book_levels(1000, 0), book_levels(1000, 1)
    put_book(real_redis, "BTCUSDT", bids[:100], asks[:100], levels=100, limit=1000, px=60_000)
    with writes_tier_when_wanted(real_redis, bids, asks) as seen:
        response = client.get("/api/v3/depth?symbol=BTCUSDT&limit=300")
    assert seen == [500]
    assert response.get_data() == naive(160, bids, asks, 300)
    assert "X-Transmute-Depth-Partial" not in response.headers


def test_a_deeper_tier_that_does_not_come_is_503_never_a_short_answer(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    put_book(
        real_redis, "BTCUSDT", book_levels(100, 0), book_levels(100, 1), levels=100, limit=1000, px=60_000
    )
    before = unavailable("levels_pending")
    started = time.monotonic()
    response = client.get("/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert 0.25 < time.monotonic() - started < 2  # DEMAND_WAIT_MS is 300 here
    assert (response.status_code, response.get_json()["code"]) == (503, -1001)
    assert "1000 levels deep" in response.get_json()["msg"]
    assert unavailable("levels_pending") == before + 1
    assert real_redis.zscore(WANTED_KEY, "BTCUSDT:1000") is not None


def test_a_thin_book_is_whole_without_waiting(real_redis: redis.Redis, client: FlaskClient) -> None:
    bids, asks = book_levels(30, 0), book_levels(45, 1)  # all there is, well within the tier
    put_book(real_redis, "BTCUSDT", bids, asks, levels=100, limit=1000, px=60_000)
    started = time.monotonic()
    response = client.get("/api/v3/depth?symbol=BTCUSDT&limit=5000")
    assert time.monotonic() - started < 0.25
    assert response.get_data() == naive(160, bids, asks, 5000)
    assert "X-Transmute-Depth-Partial" not in response.headers


def test_the_tier_needed_is_registered_with_the_read_at_most_once_a_second(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    put_book(real_redis, "BTCUSDT", book_levels(500, 0), book_levels(500, 1), levels=500, px=60_000)
    client.get("/api/v3/depth?symbol=BTCUSDT&limit=101")
    first = real_redis.zscore(WANTED_KEY, "BTCUSDT:500")
    assert first is not None and abs(first - time.time() * 1000) < 2000
    client.get("/api/v3/depth?symbol=BTCUSDT&limit=500")
    assert real_redis.zscore(WANTED_KEY, "BTCUSDT:500") == first  # counted a moment ago
    later = time.time() * 1000 + 60_000
    real_redis.zadd(WANTED_KEY, {"BTCUSDT:100": later})
    client.get("/api/v3/depth?symbol=BTCUSDT")
    assert real_redis.zscore(WANTED_KEY, "BTCUSDT:100") == later  # GT: never moved back


def test_our_api_answers_the_top_levels_with_the_records_fields(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    bids, asks = book_levels(1000, 0), book_levels(1000, 1)
    put_book(real_redis, "BTCUSDT", bids, asks, levels=1000, update_id=4242, px=60_000)
    body = client.post("/snapshot/btc_usdt/depth?limit=3").get_json()
    assert set(body) == {"symbol", "update_id", "bids", "asks", "partial", "ts", "as_of", "source",
                         "connection", "age_ms"}  # fmt: skip
    assert (body["symbol"], body["update_id"], body["partial"]) == ("BTCUSDT", 4242, [])
    assert body["bids"] == [orjson.loads(b) for b in bids[:3]]
    assert body["asks"] == [orjson.loads(a) for a in asks[:3]]
    assert 0 <= body["age_ms"] < 5000
    assert len(client.post("/snapshot/BTCUSDT/depth").get_json()["bids"]) == 100  # the default
    overridden = client.post("/snapshot/BTCUSDT/depth?limit=3", json={"limit": 7}).get_json()
    assert len(overridden["asks"]) == 7  # the body overrides the query, as for every parameter
    both = client.post("/snapshots", json={"symbols": ["BTCUSDT"], "kind": "depth", "limit": 2}).get_json()
    assert both["kind"] == "depth"
    assert both["snapshots"][0]["bids"] == [orjson.loads(b) for b in bids[:2]]


@pytest.mark.parametrize(
    "given", [{"limit": "0"}, {"limit": "5001"}, {"limit": "abc"}, {"limit": "1.5"}, {"limit": [None, None]}]
)
def test_our_api_refuses_a_limit_out_of_1_to_5000(client: FlaskClient, given: dict[str, Any]) -> None:
    for response in (
        client.post(f"/snapshot/BTCUSDT/depth?limit={given['limit']}"),
        client.post("/snapshot/BTCUSDT/depth", json=given),
        client.post("/snapshots", json={"symbols": ["BTCUSDT"], "kind": "depth", **given}),
        # The document types limit on every kind's operation: a bad one is refused there too.
        client.post("/snapshot/BTCUSDT/kline_1m", json=given),
        client.post(f"/snapshot/BTCUSDT?limit={given['limit']}"),
        client.post("/snapshots", json={"symbols": ["BTCUSDT"], **given}),
    ):
        assert response.status_code == 400
        assert response.get_json()["error"] == "limit must be a whole number of levels from 1 to 5000."
    assert client.get("/snapshot/BTCUSDT/depth").status_code == 400  # GET not supported


def test_our_api_honours_max_age_ms(real_redis: redis.Redis, client: FlaskClient) -> None:
    put_book(real_redis, "BTCUSDT", book_levels(100, 0), book_levels(100, 1),
             as_of_ms=int(time.time() * 1000) - 2000, px=60_000)  # fmt: skip
    assert client.post("/snapshot/BTCUSDT/depth?max_age_ms=60000").status_code == 200
    assert client.post("/snapshot/BTCUSDT/depth?max_age_ms=500").status_code == 500


def test_the_status_page_shows_each_book_or_why_it_cannot_be_served(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    put_book(
        real_redis, "BTCUSDT", book_levels(300, 0), book_levels(250, 1), levels=500, update_id=31, px=60_000
    )
    stream_state(real_redis, snapshot_key(DEPTH, "ETHBTC"), LIVE)
    real_redis.hset(UNSYNCED_KEY, "ETHBTC", "resyncing")
    before = real_redis.zcard(WANTED_KEY)
    btc, eth = client.get("/status.json").get_json()["books"]
    assert (btc["symbol"], btc["fresh"], btc["update_id"], btc["counts"], btc["levels"]) == (
        "BTCUSDT", True, 31, [300, 250], 500,
    )  # fmt: skip
    assert 0 <= btc["age_ms"] < 5000
    assert None not in btc.values()  # no field the row cannot know (the head holds no connection)
    assert eth == {"symbol": "ETHBTC", "fresh": False, "reason": "resyncing"}
    assert real_redis.zcard(WANTED_KEY) == before  # looking is no one's use of a book


def test_the_docs_describe_the_partial_header_and_the_limits(client: FlaskClient) -> None:
    html = client.get("/docs").get_data(as_text=True)
    assert "X-Transmute-Depth-Partial" in html
    paths = client.get("/openapi.json").get_json()["paths"]
    depth = paths["/api/v3/depth"]["get"]
    assert "X-Transmute-Depth-Partial" in depth["responses"]["200"]["headers"]
    ours = paths["/snapshot/{symbol}/{kind}"]["post"]
    assert [p["name"] for p in ours["parameters"]] == ["symbol", "kind", "max_age_ms", "limit"]
    assert "X-Transmute-Depth-Partial" in ours["responses"]["200"]["headers"]
    assert paths["/stream/{symbol}/{kind}"]["get"]["parameters"][2]["schema"]["maximum"] == 5000
    assert "Book" in client.get("/openapi.json").get_json()["components"]["schemas"]


def test_a_book_is_served_only_while_the_voucher_it_names_lives_whichever_it_names(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    bids, asks = book_levels(100, 0), book_levels(100, 1)
    put_book(real_redis, "BTCUSDT", bids, asks, update_id=1, px=60_000, connection=1)
    assert client.get("/api/v3/depth?symbol=BTCUSDT").status_code == 200  # read: connection 1's voucher
    # Carried by connection 2 now, whose voucher lives; connection 1's voucher lives on too.
    put_book(real_redis, "BTCUSDT", bids, asks, update_id=2, px=60_000, connection=2)
    assert orjson.loads(client.get("/api/v3/depth?symbol=BTCUSDT").get_data())["lastUpdateId"] == 2
    real_redis.delete(voucher_key(RUN, 2, key_tag(KEY)))  # 2 dies; 1 lives, vouching for nothing here
    assert client.get("/api/v3/depth?symbol=BTCUSDT").status_code == 503
    assert client.post("/snapshot/BTCUSDT/depth").status_code == 500


def test_a_book_two_messengers_vouch_for_is_served_while_either_lives(
    real_redis: redis.Redis, client: FlaskClient
) -> None:
    """The MGET read (the vouchers its last read named) follows the same rule as the script."""
    bids, asks = book_levels(100, 0), book_levels(100, 1)
    other = voucher_key("otherrun", 4, key_tag(KEY))
    spoke = int(time.time() * 1000) + 5000
    real_redis.set(other, spoke, px=60_000)  # spoke last
    put_book(real_redis, "BTCUSDT", bids, asks, update_id=1, px=60_000, connection=1, others=(other,))
    for _ in range(2):  # the first read through the script, the next through MGET
        assert client.get("/api/v3/depth?symbol=BTCUSDT").status_code == 200
        assert client.post("/snapshot/BTCUSDT/depth").get_json()["as_of"] == spoke
    real_redis.delete(other)  # that messenger was killed
    assert client.get("/api/v3/depth?symbol=BTCUSDT").status_code == 200
    assert client.post("/snapshot/BTCUSDT/depth").get_json()["as_of"] < int(time.time() * 1000) + 1000
    put_book(real_redis, "BTCUSDT", bids, asks, update_id=2, px=60_000, connection=2)  # names another
    assert orjson.loads(client.get("/api/v3/depth?symbol=BTCUSDT").get_data())["lastUpdateId"] == 2
    real_redis.delete(voucher_key(RUN, 2, key_tag(KEY)))  # 1 lives on, not named here
    assert client.get("/api/v3/depth?symbol=BTCUSDT").status_code == 503
