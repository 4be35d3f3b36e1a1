"""The candles' hot path: ``GET /api/v3/klines`` (and ``uiKlines``) answerable at once, without Flask.

Bots ask for candles more than for anything else, and each answer is large (1,000 rows, ~170 KB),
so Flask's request context, URL map, hooks and response object are a large share of the cost.
This WSGI middleware answers the case that needs nothing else: the plain parameters
(``symbol``, ``interval``, ``limit``, ``startTime``, ``endTime``, each once, valid as Binance
spells them, no ``timeZone``) and a range that server.candles.answer can answer exactly from
one read now. Everything else, every error, every wait for a stream or a backfill, goes to the
Flask view unchanged, which then does the same and explains what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from contract import kinds
from contract.symbols import InvalidSymbol, normalize_symbol
from server import metrics
from server.binance.klines import KLINES_DEFAULT, KLINES_MAX
from server.binance.weight import HEADER
from server.candles import CandleStore, Missing, answer
from server.params import whole_number
from server.store import StoreUnavailable

PATHS = {"/api/v3/klines": "/api/v3/klines", "/api/v3/uiKlines": "/api/v3/uiKlines"}  # path -> route
PARAMS = frozenset({"symbol", "interval", "limit", "startTime", "endTime"})
MAX_QUERY = 200

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Query = tuple[str, str, int | None, int | None, int]  # symbol, interval, start, end, limit


class FastKlines:
    """Answer plain candle requests that can be answered now; hand every other request to ``app``."""

    def __init__(self, app: WsgiApp, candles: CandleStore) -> None:
        self.app = app
        self.candles = candles

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = PATHS.get(environ.get("PATH_INFO", ""))
        query = _plain_query(environ) if route is not None else None
        if route is None or query is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        symbol, interval, start, end, limit = query
        try:
            rows = answer(self.candles.read(interval, symbol, start, end, limit), interval, start, end, limit)
        except (Missing, StoreUnavailable):
            return self.app(environ, start_response)  # the view waits, or says why not
        body = b"[" + b",".join(rows) + b"]"
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), (HEADER, "0")],
        )
        metrics.observe(route, "GET", 200, started)
        return [body]


def _plain_query(environ: dict[str, Any]) -> Query | None:
    """The parameters of a plain candle request, or None for anything the view should judge."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    raw: str = environ.get("QUERY_STRING", "")
    if len(raw) > MAX_QUERY or not raw.isascii():
        return None
    pairs = parse_qsl(raw, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= PARAMS:
        return None
    interval = params.get("interval", "")
    try:
        symbol = normalize_symbol(params.get("symbol", ""))
    except InvalidSymbol:
        return None
    if interval not in kinds.KLINE_INTERVALS:
        return None
    numbers = {
        name: whole_number(params[name]) for name in ("limit", "startTime", "endTime") if name in params
    }
    if None in numbers.values():
        return None
    limit = numbers.get("limit", KLINES_DEFAULT)
    start, end = numbers.get("startTime"), numbers.get("endTime")
    if (
        limit is None
        or not 1 <= limit <= KLINES_MAX
        or (start is not None and end is not None and start > end)
    ):
        return None
    return symbol, interval, start, end, limit
