"""The candles benchmark's baseline: a bare WSGI app answering with one Redis GET of a ready answer.

``bench.klines`` stores the very bytes the server answers for
``/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000`` under ``KEY``; this app returns them for
any request, under gunicorn with the shipped config. The difference to the server is everything
it does beyond one read: parsing the parameters, the read script, deciding the answer is exact,
encoding the open candle and joining the rows.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

KEY = "bench:klines:btcusdt:1m:1000"


@functools.cache
def _client() -> redis.Redis:
    # Made on first use, in the worker: bench.klines imports KEY without a REDIS_URL.
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The stored answer as it is, or 503 if there is none."""
    raw = _client().get(KEY)
    if raw is None:
        start_response("503 Service Unavailable", [("Content-Type", "application/json")])
        return [b'{"code":-1001,"msg":"no answer stored"}']
    value = raw.encode() if isinstance(raw, str) else raw
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(value)))])
    return [value]
