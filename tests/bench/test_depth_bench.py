"""The order book benchmark measures what it says: its book looks like Binance's, and the server
answers exactly the bytes the bare app is given, from the record as the messenger writes it."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import orjson
import redis

from bench.bare_depth import KEY
from bench.depth import LIMIT, PATH, fill
from server import create_app


def test_the_server_answers_exactly_the_bytes_the_bare_app_serves(real_redis: redis.Redis) -> None:
    answer = fill(real_redis)
    assert real_redis.get(KEY) == answer
    response = create_app({}, client=real_redis).test_client().get(PATH)
    assert response.status_code == 200
    assert response.data == answer
    book = orjson.loads(answer)
    assert len(book["bids"]) == len(book["asks"]) == LIMIT
    bids = [Decimal(p) for p, _ in book["bids"]]
    asks = [Decimal(p) for p, _ in book["asks"]]
    assert all(a > b for a, b in pairwise(bids)) and all(a < b for a, b in pairwise(asks))
    assert bids[0] < asks[0]  # not crossed
    assert all(len(q.split(".")[1]) == 8 and Decimal(q) > 0 for _, q in book["bids"] + book["asks"])
