"""The order book benchmark's baseline: a bare WSGI app answering with one Redis GET of a ready answer.

``bench.depth`` stores the very bytes the server answers for
``/api/v3/depth?symbol=BTCUSDT&limit=1000`` under ``KEY``; this app returns them for any request,
under gunicorn with the shipped config. The difference to the server is everything it does beyond
one read: the parameters, the read script and its voucher, the record's fields and the cut.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

KEY = "bench:depth:btcusdt:1000"


@functools.cache
def _client() -> redis.Redis:
    # Made on first use, in the worker: bench.depth imports KEY without a REDIS_URL.
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
