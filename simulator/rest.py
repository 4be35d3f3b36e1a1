"""Binance's public REST endpoints that Transmute calls, with weights, 429s and error codes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from simulator import record
from simulator.exchange import LOCAL, Exchange
from simulator.market import TICKER_REST_NAMES

EXCHANGE: web.AppKey[Exchange] = web.AppKey("exchange", Exchange)

MAX_DEPTH = 5000  # Binance: "If limit > 5000, only 5000 entries will be returned."
PARTIAL_DEPTH = 20  # the deepest partial depth stream (depth20)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def binance_error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error response as Binance shapes it: ``{"code": -1121, "msg": "Invalid symbol."}``."""
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers, dumps=_dumps)


def _dumps(doc: Any) -> str:
    return orjson.dumps(doc).decode()


def record_answer(request: web.Request, stream: str, value: Callable[[], Any]) -> None:
    """Keep what an answer said about ``stream``'s value, when the exchange records (``--record``)."""
    recorder = request.app[EXCHANGE].recorder
    if recorder is not None:
        recorder.answered(stream, value())


def parse_symbols(request: web.Request, exchange: Exchange) -> tuple[list[str] | None, web.Response | None]:
    """The ``symbol`` / ``symbols`` parameters: (None, None) for all, or an error response."""
    one, many = request.query.get("symbol"), request.query.get("symbols")
    if one is not None and many is not None:
        return None, binance_error(400, -1128, "Combination of optional parameters invalid.")
    names: list[str]
    if one is not None:
        names = [one]
    elif many is not None:
        try:
            parsed: Any = orjson.loads(many)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(n, str) for n in parsed):
            return None, binance_error(
                400,
                -1100,
                "Illegal characters found in parameter 'symbols'; legal range is "
                '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.',
            )
        names = parsed
    else:
        return None, None
    if not all(n in exchange.catalog for n in names):
        return None, binance_error(400, -1121, "Invalid symbol.")
    return names, None


def weighed(weight_of: Callable[[web.Request], int]) -> Callable[[Handler], Handler]:
    """Count a request's weight, answer 429 past the limit or while the 429 fault is on."""

    def wrap(handler: Handler) -> Handler:
        async def inner(request: web.Request) -> web.StreamResponse:
            exchange = request.app[EXCHANGE]
            weight = weight_of(request)
            entry = {"path": request.path_qs[:500], "at": time.time(), "weight": weight}
            exchange.rest_requests.append(entry)
            del exchange.rest_requests[:-500]
            totals = exchange.rest_totals.setdefault(request.path, {"calls": 0, "weight": 0})
            totals["calls"] += 1
            totals["weight"] += weight
            ip = request.remote or LOCAL
            used = exchange.spend_weight(weight, ip)
            fault = exchange.rest_429
            if fault["remaining"] > 0 or used > exchange.config.rest_weight_limit:
                fault["remaining"] = max(0, fault["remaining"] - 1)
                exchange.rest_rejected += 1
                retry_after = str(int(fault["retry_after_s"] or 60))
                exchange.limits.told_to_wait(ip, float(retry_after))
                return binance_error(
                    429, -1003,
                    "Too much request weight used; current limit is "
                    f"{exchange.config.rest_weight_limit} request weight per 1 MINUTE. "
                    "Please use WebSocket Streams for live updates to avoid polling the API.",
                    headers={"Retry-After": retry_after, "X-MBX-USED-WEIGHT-1M": str(used)},
                )  # fmt: skip
            response = await handler(request)
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            return response

        return inner

    return wrap


@weighed(lambda r: 1)
async def ping(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/ping``"""
    return web.json_response({})


@weighed(lambda r: 1)
async def server_time(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/time``"""
    return web.json_response({"serverTime": int(time.time() * 1000)})


@weighed(lambda r: 20)
async def exchange_info(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/exchangeInfo`` (all symbols, TRADING or not, unless some are asked for)."""
    exchange = request.app[EXCHANGE]
    names, problem = parse_symbols(request, exchange)
    if problem is not None:
        return problem
    return web.Response(
        body=orjson.dumps(exchange.catalog.exchange_info(names)), content_type="application/json"
    )


@weighed(lambda r: 2 if "symbol" in r.query else 4)
async def book_ticker(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/ticker/bookTicker``: one symbol, a list, or every trading symbol."""
    market = request.app[EXCHANGE].market

    def render(name: str) -> dict[str, str]:
        book = market.book(name)
        record_answer(request, f"{name.lower()}@bookTicker", book.payload)  # with its u: the same moment
        return book.rest()

    return _one_or_many(request, render)


def _one_or_many(request: web.Request, render: Callable[[str], Any]) -> web.Response:
    """``symbol=``: one document; ``symbols=[...]``: a list; neither: every trading symbol's."""
    exchange = request.app[EXCHANGE]
    names, problem = parse_symbols(request, exchange)
    if problem is not None:
        return problem
    if "symbol" in request.query and names:
        return _json(render(names[0]))
    return _json([render(n) for n in (names if names is not None else exchange.catalog.trading())])


def _recent(request: web.Request) -> tuple[str, int] | web.Response:
    """The symbol and limit of a recent-trades request, or its error."""
    exchange = request.app[EXCHANGE]
    symbol = request.query.get("symbol")
    if symbol is None:
        return binance_error(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if symbol not in exchange.catalog:
        return binance_error(400, -1121, "Invalid symbol.")
    raw = request.query.get("limit", "500")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return binance_error(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return symbol, int(raw)


@weighed(lambda r: 25)
async def trades(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/trades``: recent trades, oldest first."""
    parsed = _recent(request)
    if isinstance(parsed, web.Response):
        return parsed
    body = request.app[EXCHANGE].market.recent_trades(*parsed)
    if body:
        record_answer(request, f"{parsed[0].lower()}@trade", lambda: record.trade_value(body[-1]))
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def one_symbol(request: web.Request) -> str | web.Response:
    symbol = request.query.get("symbol")
    if not symbol:
        return binance_error(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if symbol not in request.app[EXCHANGE].catalog:
        return binance_error(400, -1121, "Invalid symbol.")
    return symbol


@weighed(lambda r: 2)
async def avg_price(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/avgPrice``."""
    symbol = one_symbol(request)
    if isinstance(symbol, web.Response):
        return symbol
    doc = request.app[EXCHANGE].market.avg_price_rest(symbol)
    record_answer(request, f"{symbol.lower()}@avgPrice", lambda: record.avg_price_value(doc))
    return _json(doc)


def depth_weight(request: web.Request) -> int:
    """Binance's weight of ``GET /api/v3/depth``: 1-100 levels 5, -500 25, -1000 50, more 250."""
    raw = request.query.get("limit", "100")
    limit = int(raw) if raw.isdigit() else 100
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@weighed(depth_weight)
async def depth(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/depth``: ``limit`` default 100, above 5,000 cut to 5,000. Deeper than 20 levels
    (the partial depth streams'), it makes the symbol's full book if it has none yet."""
    exchange = request.app[EXCHANGE]
    symbol = one_symbol(request)
    if isinstance(symbol, web.Response):
        return symbol
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or int(raw) < 1:
        return binance_error(400, -1130, "Data sent for parameter 'limit' is not valid.")
    limit = min(int(raw), MAX_DEPTH)
    market = exchange.market
    if limit > PARTIAL_DEPTH:
        market.order_book(symbol)
    delay = exchange.take_depth_delay()
    if delay is None:
        doc = market.depth(symbol, limit)
    else:  # the depth_delay fault: an answer as old as asked, sent late
        delay_ms, stale_updates = delay
        doc = market.depth(symbol, limit, back=stale_updates)
        await asyncio.sleep(delay_ms / 1000)
    top = {"lastUpdateId": doc["lastUpdateId"], "bids": doc["bids"][:1], "asks": doc["asks"][:1]}
    record_answer(request, f"{symbol.lower()}@depth", lambda: top)  # the partial book streams' shape
    return _json(doc)


@weighed(lambda r: 2 if "symbol" in r.query else 40 if "symbols" in r.query else 80)
async def ticker_24hr(request: web.Request) -> web.StreamResponse:
    """``GET /api/v3/ticker/24hr``: one symbol, a list, or every trading symbol."""
    market = request.app[EXCHANGE].market

    def render(name: str) -> dict[str, Any]:
        doc = market.ticker_rest(name)
        record_answer(request, f"{name.lower()}@ticker", lambda: record.ticker_value(doc, TICKER_REST_NAMES))
        return doc

    return _one_or_many(request, render)


def add_routes(app: web.Application) -> None:
    """Mount the REST endpoints."""
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    app.router.add_get("/api/v3/ticker/bookTicker", book_ticker)
    app.router.add_get("/api/v3/trades", trades)
    app.router.add_get("/api/v3/avgPrice", avg_price)
    app.router.add_get("/api/v3/depth", depth)
    app.router.add_get("/api/v3/ticker/24hr", ticker_24hr)
