"""The exchange itself: ping, time and exchangeInfo."""

from __future__ import annotations

import time

import redis
from flask import Response, request

from contract.keys import EXCHANGE_INFO_KEY
from server.binance.common import INVALID_SYMBOL, BinanceError, bp, json_body, symbols_param
from server.errors import STORE_DOWN, store_down
from server.exchange_info import Versions
from server.views import store

# Per process: the last exchangeInfo document, prepared to answer from.
EXCHANGE_INFO = Versions()


@bp.get("/ping")
def ping() -> Response:
    """Test connectivity."""
    return json_body({})


@bp.get("/time")
def server_time() -> Response:
    """The server's time in milliseconds."""
    return json_body({"serverTime": int(time.time() * 1000)})


@bp.get("/exchangeInfo")
def exchange_info() -> Response:
    """The exchange's symbols and rules as the messenger last fetched them (ETag, gzip: exchange_info.py)."""
    symbols = symbols_param()
    try:
        raw = store().client.get(EXCHANGE_INFO_KEY)
    except redis.RedisError as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Exchange information unavailable: {STORE_DOWN}") from None
    version = EXCHANGE_INFO.current(raw if isinstance(raw, bytes) else None)
    if version is None:
        raise BinanceError(503, -1001, "Exchange information is not loaded yet; try again shortly.")
    if symbols is not None and not all(s in version.symbols for s in symbols):
        raise BinanceError(*INVALID_SYMBOL)
    return version.answer(request, symbols, int(time.time() * 1000))
