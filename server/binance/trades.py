"""Recent trades, oldest first."""

from __future__ import annotations

from decimal import Decimal

from flask import Response, request

from contract import kinds
from server.binance.common import BinanceError, bp, json_body, limit_param, records, required_symbol
from server.errors import STORE_DOWN, store_down
from server.store import StoreUnavailable
from server.views import settings, store

TRADES_DEFAULT, TRADES_MAX = 500, 1000


@bp.get("/trades")
def trades() -> Response:
    """The most recent trades, oldest first."""
    symbol = required_symbol()
    limit = limit_param(TRADES_DEFAULT, lambda n: 1 <= n <= TRADES_MAX, f"Up to {TRADES_MAX}.")
    records(kinds.TRADE, [symbol])  # the list is whole only while its stream is current
    try:
        items = store().recent_trades(symbol, limit, settings().demand_wait_ms / 1000)
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None
    if items is None:
        raise BinanceError(503, -1001, f"Recent trades of {symbol} are being fetched; try again shortly.")
    return json_body([
        {"id": t["trade_id"], "price": t["price"], "qty": t["quantity"],
         "quoteQty": _quote_quantity(t["price"], t["quantity"]), "time": t["trade_time"],
         "isBuyerMaker": t["is_buyer_maker"], "isBestMatch": True}
        for t in items
    ])  # fmt: skip


def _quote_quantity(price: str, quantity: str) -> str:
    """price x quantity, exactly, in Binance's 8 decimals."""
    return f"{(Decimal(price) * Decimal(quantity)).quantize(Decimal('1e-8')):f}"
