"""The serving benchmark's baseline: a bare WSGI app answering every request with one Redis GET.

Run by gunicorn with the shipped config, in place of the server, so both answer under the same
workers and worker class: the difference is what the server does beyond that one GET.

``BARE_KEY`` names another key to answer with (the freshness benchmark's peer writes its own).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

from contract.keys import snapshot_key

KEY = os.environ.get("BARE_KEY") or snapshot_key("bookticker", "btcusdt")
_client = redis.Redis.from_url(os.environ["REDIS_URL"])


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The stored value as it is, or 500 if there is none."""
    raw = _client.get(KEY)
    if raw is None:
        start_response("500 Internal Server Error", [("Content-Type", "application/json")])
        return [b'{"status_code":500,"error":"stale"}']
    value = raw.encode() if isinstance(raw, str) else raw
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(value)))])
    return [value]
