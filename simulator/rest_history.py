"""Binance's REST endpoints over a symbol's history: klines, trade lists, rolling-window tickers.

Parameters, defaults, limits, weights and error codes as Binance documents them:

- ``GET /api/v3/klines``, ``/api/v3/uiKlines`` (weight 2): ``symbol``, ``interval``, ``startTime``,
  ``endTime``, ``timeZone``, ``limit`` (default 500, 1 to 1,000); ranges as simulator/klines.py says.
- ``GET /api/v3/aggTrades`` (weight 4): ``fromId`` (aggregate ids from it), or ``startTime`` and/or
  ``endTime`` (the first ``limit`` at or after ``startTime``, or with ``endTime`` alone the last
  ``limit`` at or before it; both: inclusive). ``fromId`` with a time is -1128, as Binance's
  WebSocket API documents for the same query ("fromId cannot be used together with startTime and
  endTime"). Nothing: the most recent.
- ``GET /api/v3/historicalTrades`` (weight 25): ``fromId`` (default: the most recent), ``limit``.
- ``GET /api/v3/ticker`` (weight 4 a symbol, 200 for more than 50): ``symbol`` or ``symbols`` (up to
  100), ``windowSize`` (default ``1d``), ``type`` ``FULL`` or ``MINI``; see simulator/rolling.py.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from simulator import klines, record, rolling
from simulator.clock import now_ms
from simulator.market import agg_entry, trade_entry
from simulator.rest import EXCHANGE, binance_error, one_symbol, parse_symbols, record_answer, weighed
from simulator.windows import INTERVALS, open_of, parse_time_zone

MAX_SYMBOLS = 100
_DIGITS = "'^[0-9]{1,20}$'"


class BadRequest(Exception):
    """A parameter Binance would refuse: answered as its error."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _long(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20):
        raise BadRequest(-1100, f"Illegal characters found in parameter '{name}'; legal range is {_DIGITS}.")
    return int(raw)


def _limit(request: web.Request) -> int:
    limit = _long(request, "limit")
    if limit is None:
        return klines.DEFAULT_LIMIT
    if not 1 <= limit <= klines.MAX_LIMIT:
        raise BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _klines(request: web.Request) -> web.StreamResponse:
    symbol = one_symbol(request)
    if isinstance(symbol, web.Response):
        return symbol
    interval = request.query.get("interval")
    if not interval:
        return binance_error(
            400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
        )
    if interval not in INTERVALS:
        return binance_error(400, -1120, "Invalid interval.")
    try:
        start, end, limit = _long(request, "startTime"), _long(request, "endTime"), _limit(request)
    except BadRequest as bad:
        return binance_error(400, bad.code, bad.msg)
    offset = parse_time_zone(request.query.get("timeZone", "0"))
    if offset is None:
        return binance_error(400, -1130, "Data sent for parameter 'timeZone' is not valid.")
    market, now = request.app[EXCHANGE].market, now_ms()
    tape = market.tape(symbol)
    starts = klines.opens(tape, interval, offset, start, end, limit, now)
    rows = klines.rows(tape, interval, offset, starts)
    if rows and rows[-1][0] == open_of(now, interval, offset) and offset in (0, 8 * 3_600_000):
        suffix = "@+08:00" if offset else ""  # the open candle: what its stream says now
        stream = f"{symbol.lower()}@kline_{interval}{suffix}"
        record_answer(request, stream, lambda: record.kline_value(rows[-1]))
    return _json(rows)


@weighed(lambda r: 2)
async def get_klines(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/klines``."""
    return await _klines(request)


@weighed(lambda r: 2)
async def ui_klines(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/uiKlines`` (the same rows: see simulator/klines.py)."""
    return await _klines(request)


@weighed(lambda r: 4)
async def agg_trades(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/aggTrades``."""
    symbol = one_symbol(request)
    if isinstance(symbol, web.Response):
        return symbol
    try:
        from_id, limit = _long(request, "fromId"), _limit(request)
        start, end = _long(request, "startTime"), _long(request, "endTime")
    except BadRequest as bad:
        return binance_error(400, bad.code, bad.msg)
    if from_id is not None and (start is not None or end is not None):
        return binance_error(400, -1128, "Combination of optional parameters invalid.")
    tape = request.app[EXCHANGE].market.tape(symbol)
    if from_id is not None:
        if from_id < tape.live_first_agg:
            from_id = max(from_id, tape.history.first_agg)  # before the first: from the first
        rows = tape.aggs(from_id, from_id + limit)
    elif start is not None:
        first = tape.first_agg_at(start)
        rows = [a for a in tape.aggs(first, first + limit) if end is None or a[1] <= end]
    elif end is not None:
        stop = tape.first_agg_at(end + 1)
        rows = tape.aggs(stop - limit, stop)
    else:
        rows = tape.aggs(tape.last_agg - limit + 1, tape.last_agg + 1)
    body = [agg_entry(a) for a in rows]
    if body and body[-1]["a"] == tape.last_agg:
        record_answer(request, f"{symbol.lower()}@aggTrade", lambda: body[-1])
    return _json(body)


@weighed(lambda r: 25)
async def historical_trades(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/historicalTrades``."""
    symbol = one_symbol(request)
    if isinstance(symbol, web.Response):
        return symbol
    try:
        from_id, limit = _long(request, "fromId"), _limit(request)
    except BadRequest as bad:
        return binance_error(400, bad.code, bad.msg)
    tape = request.app[EXCHANGE].market.tape(symbol)
    lo = tape.last_id - limit + 1 if from_id is None else from_id
    if lo < tape.live_first_id:
        lo = max(lo, tape.history.first_id)  # before the first: from the first
    body = [trade_entry(t) for t in tape.trades(lo, lo + limit)]
    if body and body[-1]["id"] == tape.last_id:
        record_answer(request, f"{symbol.lower()}@trade", lambda: record.trade_value(body[-1]))
    return _json(body)


def _ticker_weight(request: web.Request) -> int:
    if "symbols" not in request.query:
        return 4
    try:
        names = orjson.loads(request.query["symbols"])
    except orjson.JSONDecodeError:
        return 4
    count = len(names) if isinstance(names, list) else 1
    return 200 if count > 50 else 4 * max(1, count)


@weighed(_ticker_weight)
async def rolling_ticker(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/ticker``: rolling-window statistics of one symbol or a list."""
    exchange = request.app[EXCHANGE]
    if "symbol" not in request.query and "symbols" not in request.query:
        return binance_error(
            400, -1102, "Param 'symbol' or 'symbols' must be sent, but both were empty/null!"
        )
    names, problem = parse_symbols(request, exchange)
    if problem is not None or names is None:
        return problem or binance_error(400, -1102, "Mandatory parameter 'symbol' was not sent.")
    if len(names) > MAX_SYMBOLS:
        return binance_error(400, -1101, f"Too many values sent for parameter 'symbols', max {MAX_SYMBOLS}.")
    window_name = request.query.get("windowSize", "1d")
    window = rolling.window_ms(window_name)
    if window is None:
        return binance_error(400, -1100, "Invalid windowSize: 1m to 59m, 1h to 23h or 1d to 7d.")
    shape = request.query.get("type", "FULL")
    if shape not in ("FULL", "MINI"):
        return binance_error(400, -1139, "Invalid ticker type.")
    now = now_ms()
    docs = []
    for name in names:
        values = rolling.letters(exchange.market.tape(name), window, now)
        if window_name in rolling.STREAM_WINDOWS:
            record_answer(request, f"{name.lower()}@ticker_{window_name}", lambda v=values: v)  # type: ignore[misc]
        docs.append(rolling.rest(name, values, shape == "FULL"))
    return _json(docs[0] if "symbol" in request.query else docs)


def add_routes(app: web.Application) -> None:
    """Mount the history endpoints."""
    app.router.add_get("/api/v3/klines", get_klines)
    app.router.add_get("/api/v3/uiKlines", ui_klines)
    app.router.add_get("/api/v3/aggTrades", agg_trades)
    app.router.add_get("/api/v3/historicalTrades", historical_trades)
    app.router.add_get("/api/v3/ticker", rolling_ticker)
