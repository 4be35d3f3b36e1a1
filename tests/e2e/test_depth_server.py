"""Order books through the server as shipped (gunicorn, gevent workers) from records in Redis,
written as the messenger writes them, without a messenger: the fast path, the errors, live push."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from contract.keys import LIVE, SYMBOLS_KEY, WATCHED_KEY, key_tag, snapshot_key, voucher_key
from contract.kinds import DEPTH
from tests.processes import EventStream, Gunicorn, http, wait_until
from tests.records import RUN, book_levels, put_book, stream_state

KEY = snapshot_key(DEPTH, "BTCUSDT")


@pytest.fixture
def listed(real_redis: redis.Redis) -> redis.Redis:
    real_redis.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING"})
    stream_state(real_redis, KEY, LIVE)
    return real_redis


@pytest.fixture
def streams() -> Iterator[Callable[[str], EventStream]]:
    opened: list[EventStream] = []

    def open_stream(url: str) -> EventStream:
        stream = EventStream(url)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_a_deep_book_is_served_exactly_by_the_real_server(gunicorn: Gunicorn, listed: redis.Redis) -> None:
    bids, asks = book_levels(1000, 0), book_levels(1000, 1)
    put_book(listed, "BTCUSDT", bids, asks, levels=1000, limit=1000, update_id=77, px=60_000)
    status, headers, body = get(f"{gunicorn.url}/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert status == 200
    expected = {
        "lastUpdateId": 77,
        "bids": [orjson.loads(b) for b in bids],
        "asks": [orjson.loads(a) for a in asks],
    }
    assert body == orjson.dumps(expected)
    assert headers["X-MBX-USED-WEIGHT-1M"] == "0"
    assert headers["Content-Type"] == "application/json"
    # Asked for deeper than the snapshot the book was synchronized from: what is known, and which sides.
    put_book(listed, "BTCUSDT", bids, asks, levels=1000, limit=1000, partial=(True, True), px=60_000)
    status, headers, body = get(f"{gunicorn.url}/api/v3/depth?symbol=BTCUSDT&limit=5000")
    assert (status, headers["X-Transmute-Depth-Partial"]) == (200, "bids,asks")
    assert len(orjson.loads(body)["bids"]) == 1000
    listed.delete(voucher_key(RUN, 1, key_tag(KEY)))
    status, headers, body = get(f"{gunicorn.url}/api/v3/depth?symbol=BTCUSDT")
    assert (status, orjson.loads(body)["code"], headers["Retry-After"]) == (503, -1001, "1")
    assert headers["X-MBX-USED-WEIGHT-1M"] == "0"
    _, _, text = http("GET", f"{gunicorn.url}/metrics")
    assert 'transmute_depth_unavailable_total{reason="not_vouched"}' in str(text)


def test_live_push_of_a_book_sends_its_top_levels_when_they_change(
    gunicorn: Gunicorn, listed: redis.Redis, streams: Callable[[str], EventStream]
) -> None:
    bids, asks = book_levels(500, 0), book_levels(500, 1)
    put_book(listed, "BTCUSDT", bids, asks, levels=500, update_id=1, px=60_000)
    stream = streams(f"{gunicorn.url}/stream/BTCUSDT/depth?limit=5")
    assert stream.status == 200
    first = stream.next(5, lambda e: e.get("event") == "snapshot")["json"]
    assert first["bids"] == [orjson.loads(b) for b in bids[:5]]
    assert (len(first["asks"]), first["update_id"], first["partial"]) == (5, 1, [])
    wait_until(lambda: listed.zscore(WATCHED_KEY, KEY) is not None, 5, what="the key followed")

    def publish(update_id: int, new_bids: list[bytes]) -> None:
        raw = put_book(listed, "BTCUSDT", new_bids, asks, levels=500, update_id=update_id, px=60_000)
        listed.publish(KEY, raw)  # as the messenger's writer does for a followed key

    deep_change = [*bids[:50], b'["1.00000000","9.00000000"]', *bids[51:]]
    publish(2, deep_change)  # below the top 5: no event
    top_change = [b'["100.00000000","0.50000000"]', *deep_change[1:]]
    publish(3, top_change)
    event = stream.next(5, lambda e: e.get("event") == "snapshot")["json"]
    assert event["update_id"] == 3
    assert event["bids"][0] == ["100.00000000", "0.50000000"]
    assert len(event["bids"]) == len(event["asks"]) == 5
    listed.publish(KEY, b"")  # withdrawn (the book resynchronizes)
    stale = stream.next(5, lambda e: e.get("event") == "stale")["json"]
    assert stale["status_code"] == 500
    status, _, _ = http("GET", f"{gunicorn.url}/stream/BTCUSDT/depth?limit=0")
    assert status == 400


def test_our_api_through_the_real_server(gunicorn: Gunicorn, listed: redis.Redis) -> None:
    bids, asks = book_levels(200, 0), book_levels(200, 1)
    put_book(listed, "BTCUSDT", bids, asks, levels=500, update_id=9, px=60_000)
    status, _, doc = http("POST", f"{gunicorn.url}/snapshot/BTC_USDT/depth?limit=150")
    assert status == 200
    body: Any = doc
    assert (body["update_id"], len(body["bids"]), body["partial"]) == (9, 150, [])
