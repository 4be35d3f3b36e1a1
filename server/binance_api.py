"""Binance's public market-data REST API, answered from the streams: a client changes its base URL.

``GET /api/v3/ping, time, exchangeInfo, ticker/bookTicker, ticker/price, ticker/24hr, avgPrice,
depth, trades`` with Binance's parameter names, JSON shapes and error bodies
(``{"code": -1121, "msg": "Invalid symbol."}``). A symbol not streamed yet is streamed on demand.
When a value cannot be vouched for, the answer is HTTP 503 with ``{"code": -1001, ...}``:
Binance's "internal error; try again", never an old value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, request

from contract import kinds
from contract.keys import EXCHANGE_INFO_KEY
from contract.symbols import InvalidSymbol, normalize_symbol
from server import admission, lookup, metrics
from server.errors import STORE_DOWN, store_down
from server.exchange_info import Versions
from server.params import MAX_DIGITS, whole_number
from server.store import StoreUnavailable
from server.views import MAX_SYMBOLS, settings, store

bp = Blueprint("binance", __name__, url_prefix="/api/v3")

DEPTH_LIMITS = (5, 10, 20)
TRADES_DEFAULT, TRADES_MAX = 500, 1000


class BinanceError(Exception):
    """An error in Binance's shape: HTTP status, Binance's code and message."""

    def __init__(self, status: int, code: int, msg: str, retry_after_s: int = 1) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg
        self.retry_after_s = retry_after_s


INVALID_SYMBOL = (400, -1121, "Invalid symbol.")
# Per process: the last exchangeInfo document, prepared to answer from.
EXCHANGE_INFO = Versions()


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc), mimetype="application/json")


@bp.errorhandler(BinanceError)
def binance_error(exc: BinanceError) -> Response:
    """Binance's error body."""
    response = _json({"code": exc.code, "msg": exc.msg})
    response.status_code = exc.status
    if exc.status in (429, 503):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _symbol(raw: str) -> str:
    try:
        return normalize_symbol(raw)
    except InvalidSymbol:
        raise BinanceError(*INVALID_SYMBOL) from None


def _symbols_param() -> list[str] | None:
    """``symbol`` or ``symbols`` (a JSON list); None when neither is given."""
    one, many = request.args.get("symbol"), request.args.get("symbols")
    if one is not None and many is not None:
        raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
    if one is not None:
        return [_symbol(one)]
    if many is None:
        return None
    try:
        names = orjson.loads(many)
    except orjson.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.")
    return list(dict.fromkeys(_symbol(n) for n in names))


def _required_symbol() -> str:
    raw = request.args.get("symbol")
    if not raw:
        raise BinanceError(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    return _symbol(raw)


def _limit(default: int, allowed: Callable[[int], bool], hint: str) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    value = whole_number(raw)
    if value is None:
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter 'limit'; legal range is '^[0-9]{{1,{MAX_DIGITS}}}$'.",
        )
    if not allowed(value):
        raise BinanceError(400, -1130, f"Data sent for parameter 'limit' is not valid. {hint}")
    return value


def _records(kind: str, symbols: list[str] | None) -> list[dict[str, Any]]:
    """The current records of a kind for these symbols, or for every symbol streamed in it."""
    key_kind = kinds.key_kind(kind)
    if symbols is not None and len(symbols) > MAX_SYMBOLS:  # each may start a stream, as in /snapshots
        raise BinanceError(400, -1101, f"Too many values for parameter 'symbols'; at most {MAX_SYMBOLS}.")
    try:
        if symbols is None:
            streamed = store().streamed(key_kind)
            # Listing everything streamed is no one's use of each symbol: it keeps none streamed.
            found = store().snapshots(key_kind, streamed, touch=False) if streamed else []
            return [
                lookup.with_age(r, s, None) for s, r in zip(streamed, found, strict=True) if r is not None
            ]
        return lookup.current(store(), key_kind, symbols, None, settings().demand_wait_ms / 1000)
    except lookup.UnknownSymbol:
        raise BinanceError(*INVALID_SYMBOL) from None
    except lookup.Stale as exc:
        metrics.STALE.labels("binance").inc()
        raise BinanceError(503, -1001, f"Market data unavailable: {exc}") from None
    except lookup.NoValue as exc:
        raise BinanceError(503, -1001, f"Market data unavailable: {exc}") from None
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None
    except admission.Refused as exc:
        raise BinanceError(429, -1003, str(exc), exc.retry_after_s) from None


def _one_or_many(symbols: list[str] | None, docs: list[dict[str, Any]]) -> Response:
    """An object for ``symbol=``, a list otherwise, as Binance answers."""
    if symbols is not None and "symbol" in request.args:
        return _json(docs[0])
    return _json(docs)


@bp.get("/ping")
def ping() -> Response:
    """Test connectivity."""
    return _json({})


@bp.get("/time")
def server_time() -> Response:
    """The server's time in milliseconds."""
    return _json({"serverTime": int(time.time() * 1000)})


@bp.get("/exchangeInfo")
def exchange_info() -> Response:
    """The exchange's symbols and rules as the messenger last fetched them (ETag, gzip: exchange_info.py)."""
    symbols = _symbols_param()
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


@bp.get("/ticker/bookTicker")
def book_ticker() -> Response:
    """Best bid and ask: ``symbol``, ``symbols``, or every symbol streamed."""
    symbols = _symbols_param()
    docs = [
        {"symbol": r["symbol"], "bidPrice": r["bid_price"], "bidQty": r["bid_quantity"],
         "askPrice": r["ask_price"], "askQty": r["ask_quantity"]}
        for r in _records(kinds.BOOK_TICKER, symbols)
    ]  # fmt: skip
    return _one_or_many(symbols, docs)


@bp.get("/ticker/price")
def ticker_price() -> Response:
    """The last price (from the 24 h ticker stream): ``symbol``, ``symbols``, or every one streamed."""
    symbols = _symbols_param()
    docs = [{"symbol": r["symbol"], "price": r["close"]} for r in _records("ticker", symbols)]
    return _one_or_many(symbols, docs)


MINI_24HR = {
    "symbol": "symbol", "openPrice": "open", "highPrice": "high", "lowPrice": "low", "lastPrice": "close",
    "volume": "volume", "quoteVolume": "quote_volume", "openTime": "open_time", "closeTime": "close_time",
    "firstId": "first_trade_id", "lastId": "last_trade_id", "count": "trades",
}  # fmt: skip
FULL_24HR = {
    "symbol": "symbol", "priceChange": "price_change", "priceChangePercent": "price_change_percent",
    "weightedAvgPrice": "weighted_avg_price", "prevClosePrice": "prev_close_price", "lastPrice": "close",
    "lastQty": "last_quantity", "bidPrice": "bid_price", "bidQty": "bid_quantity", "askPrice": "ask_price",
    "askQty": "ask_quantity", **{k: v for k, v in MINI_24HR.items() if k != "symbol"},
}  # fmt: skip


@bp.get("/ticker/24hr")
def ticker_24hr() -> Response:
    """The rolling 24 h statistics (``type`` FULL or MINI): ``symbol``, ``symbols``, or all streamed."""
    shape = request.args.get("type", "FULL")
    if shape not in ("FULL", "MINI"):
        raise BinanceError(400, -1139, "Invalid ticker type.")
    names = FULL_24HR if shape == "FULL" else MINI_24HR
    symbols = _symbols_param()
    docs = [{ours: r[theirs] for ours, theirs in names.items()} for r in _records("ticker", symbols)]
    return _one_or_many(symbols, docs)


@bp.get("/avgPrice")
def avg_price() -> Response:
    """The current average price over Binance's window."""
    [r] = _records("avgPrice", [_required_symbol()])
    interval = str(r["interval"])
    minutes = int(interval[:-1]) if interval.endswith("m") and interval[:-1].isdigit() else 5
    return _json({"mins": minutes, "price": r["price"], "closeTime": r["last_trade_time"]})


@bp.get("/depth")
def depth() -> Response:
    """The top of the order book, up to 20 levels (the partial book streams)."""
    symbol = _required_symbol()
    limit = _limit(
        20, lambda n: 1 <= n <= DEPTH_LIMITS[-1], f"Transmute serves up to {DEPTH_LIMITS[-1]} levels."
    )
    levels = next(n for n in DEPTH_LIMITS if n >= limit)
    [r] = _records(f"depth{levels}", [symbol])
    return _json({"lastUpdateId": r["last_update_id"], "bids": r["bids"][:limit], "asks": r["asks"][:limit]})


@bp.get("/trades")
def trades() -> Response:
    """The most recent trades, oldest first."""
    symbol = _required_symbol()
    limit = _limit(TRADES_DEFAULT, lambda n: 1 <= n <= TRADES_MAX, f"Up to {TRADES_MAX}.")
    _records(kinds.TRADE, [symbol])  # the list is whole only while its stream is current
    try:
        items = store().recent_trades(symbol, limit, settings().demand_wait_ms / 1000)
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None
    if items is None:
        raise BinanceError(503, -1001, f"Recent trades of {symbol} are being fetched; try again shortly.")
    return _json([
        {"id": t["trade_id"], "price": t["price"], "qty": t["quantity"],
         "quoteQty": _quote_quantity(t["price"], t["quantity"]), "time": t["trade_time"],
         "isBuyerMaker": t["is_buyer_maker"], "isBestMatch": True}
        for t in items
    ])  # fmt: skip


def _quote_quantity(price: str, quantity: str) -> str:
    """price x quantity, exactly, in Binance's 8 decimals."""
    return f"{(Decimal(price) * Decimal(quantity)).quantize(Decimal('1e-8')):f}"
