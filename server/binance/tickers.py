"""Tickers: best bid and ask, last price, 24 h statistics, for one symbol, a list, or all."""

from __future__ import annotations

from flask import Response, request

from contract import kinds
from server.binance.common import BinanceError, bp, one_or_many, records, symbols_param


@bp.get("/ticker/bookTicker")
def book_ticker() -> Response:
    """Best bid and ask: ``symbol``, ``symbols``, or every symbol streamed."""
    symbols = symbols_param()
    docs = [
        {"symbol": r["symbol"], "bidPrice": r["bid_price"], "bidQty": r["bid_quantity"],
         "askPrice": r["ask_price"], "askQty": r["ask_quantity"]}
        for r in records(kinds.BOOK_TICKER, symbols)
    ]  # fmt: skip
    return one_or_many(symbols, docs)


@bp.get("/ticker/price")
def ticker_price() -> Response:
    """The last price (from the 24 h ticker stream): ``symbol``, ``symbols``, or every one streamed."""
    symbols = symbols_param()
    docs = [{"symbol": r["symbol"], "price": r["close"]} for r in records("ticker", symbols)]
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


@bp.get("/ticker/24hr")
def ticker_24hr() -> Response:
    """The rolling 24 h statistics (``type`` FULL or MINI): ``symbol``, ``symbols``, or all streamed."""
    shape = request.args.get("type", "FULL")
    if shape not in ("FULL", "MINI"):
        raise BinanceError(400, -1139, "Invalid ticker type.")
    names = FULL_24HR if shape == "FULL" else MINI_24HR
    symbols = symbols_param()
    docs = [{ours: r[theirs] for ours, theirs in names.items()} for r in records("ticker", symbols)]
    return one_or_many(symbols, docs)
