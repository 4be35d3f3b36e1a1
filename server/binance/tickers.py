"""Tickers: best bid and ask, last price, 24 h statistics, for one symbol, a list, or every
trading symbol (server/binance/whole_market.py)."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from contract import kinds
from server import admission, metrics
from server.binance import whole_market
from server.binance.common import BinanceError, bp, one_or_many, records, symbols_param
from server.errors import STORE_DOWN, store_down
from server.store import StoreUnavailable
from server.views import settings, store


def listed(kind: str, symbols: list[str] | None) -> list[dict[str, Any]]:
    """The current records of ``symbols``, or with None of every trading symbol (only whole)."""
    if symbols is not None:
        return records(kind, symbols)
    config = settings()
    try:
        return whole_market.records(store(), kind, config.demand_idle_s, config.demand_wait_ms / 1000)
    except whole_market.Incomplete as exc:
        if exc.stale:
            metrics.STALE.labels("binance").inc()
        raise BinanceError(503, -1001, f"Market data unavailable: {exc}") from None
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None
    except admission.Refused as exc:
        raise BinanceError(429, -1003, str(exc), exc.retry_after_s) from None


@bp.get("/ticker/bookTicker")
def book_ticker() -> Response:
    """Best bid and ask: ``symbol``, ``symbols``, or every trading symbol."""
    symbols = symbols_param()
    docs = [
        {"symbol": r["symbol"], "bidPrice": r["bid_price"], "bidQty": r["bid_quantity"],
         "askPrice": r["ask_price"], "askQty": r["ask_quantity"]}
        for r in listed(kinds.BOOK_TICKER, symbols)
    ]  # fmt: skip
    return one_or_many(symbols, docs)


@bp.get("/ticker/price")
def ticker_price() -> Response:
    """The last price (from the 24 h ticker stream): ``symbol``, ``symbols``, or every trading symbol."""
    symbols = symbols_param()
    docs = [{"symbol": r["symbol"], "price": r["close"]} for r in listed(kinds.TICKER, symbols)]
    return one_or_many(symbols, docs)


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


def ticker_type() -> str:
    """``type``: FULL (the default) or MINI."""
    shape = request.args.get("type", "FULL")
    if shape not in ("FULL", "MINI"):
        raise BinanceError(400, -1139, "Invalid ticker type.")
    return shape


@bp.get("/ticker/24hr")
def ticker_24hr() -> Response:
    """Rolling 24 h statistics (``type`` FULL or MINI): ``symbol``, ``symbols``, or every trading symbol."""
    names = FULL_24HR if ticker_type() == "FULL" else MINI_24HR
    symbols = symbols_param()
    docs = [{ours: r[theirs] for ours, theirs in names.items()} for r in listed(kinds.TICKER, symbols)]
    return one_or_many(symbols, docs)
