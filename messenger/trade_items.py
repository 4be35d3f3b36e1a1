"""Trades and aggregate trades as Binance's REST API answers them: what the kept lists hold.

A kept item is the exact JSON object of ``/api/v3/aggTrades`` or ``/api/v3/historicalTrades``, so
the server answers by joining them. Streamed items are turned into that shape here; REST's are
parsed (and checked) by messenger.binance and encoded the same way.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

import orjson

from contract.trade_history import AGG_TRADE, PAGE, TRADE
from messenger.binance import Fields, MalformedFrame, Order, agg_trade_from_rest, trade_from_rest
from messenger.rest import BinanceRest, RestError

# REST: the recent list, and the list from an id (Binance: weight 4 and 25 a call, any limit).
RECENT_PATH = {AGG_TRADE: "/api/v3/aggTrades", TRADE: "/api/v3/trades"}
FROM_ID_PATH = {AGG_TRADE: "/api/v3/aggTrades", TRADE: "/api/v3/historicalTrades"}
ID_FIELD = {AGG_TRADE: "agg_trade_id", TRADE: "trade_id"}

Item = tuple[int, bytes]  # (id, member: the item in Binance's REST shape)


def member(series: str, fields: Fields) -> bytes:
    """An item as Binance's REST API answers it: what the tail holds and the server serves."""
    if series == AGG_TRADE:
        return orjson.dumps({
            "a": fields["agg_trade_id"], "p": fields["price"], "q": fields["quantity"],
            "f": fields["first_trade_id"], "l": fields["last_trade_id"], "T": fields["trade_time"],
            "m": fields["is_buyer_maker"], "M": True,
        })  # fmt: skip
    quote = fields.get("quote_quantity") or quote_quantity(fields["price"], fields["quantity"])
    return orjson.dumps({
        "id": fields["trade_id"], "price": fields["price"], "qty": fields["quantity"], "quoteQty": quote,
        "time": fields["trade_time"], "isBuyerMaker": fields["is_buyer_maker"], "isBestMatch": True,
    })  # fmt: skip


def quote_quantity(price: str, quantity: str) -> str:
    """price x quantity in 8 decimals (the stream does not carry it; REST's own is kept as sent)."""
    return f"{(Decimal(price) * Decimal(quantity)).quantize(Decimal('1e-8'), rounding=ROUND_DOWN):f}"


def parse_rest(series: str, entries: Any, symbol: str) -> list[tuple[Item, Order, Fields]]:
    """REST items, oldest first, as (item, order, record fields); MalformedFrame if one is not."""
    if not isinstance(entries, list):
        raise MalformedFrame(f"{series} answer is not a list")
    out = []
    for entry in entries:
        if series == AGG_TRADE:
            order, fields = agg_trade_from_rest(entry, symbol)
        else:
            order, fields = trade_from_rest(entry, symbol)
            if isinstance(entry.get("quoteQty"), str):
                fields = {**fields, "quote_quantity": entry["quoteQty"]}
        out.append(((order, member(series, fields)), order, _record_fields(fields)))
    return out


def _record_fields(fields: Fields) -> Fields:
    return {k: v for k, v in fields.items() if k != "quote_quantity"}


def fetch_page(
    rest: BinanceRest, series: str, path: str, symbol: str, params: dict[str, str]
) -> list[tuple[Item, Order, Fields]]:
    """One REST call of up to PAGE items, oldest first; RestError if it fails or is not a list of them."""
    body = rest.get(path, {"symbol": symbol, **params, "limit": str(PAGE)})
    try:
        return parse_rest(series, body, symbol)
    except MalformedFrame as exc:
        raise RestError(f"unexpected answer ({exc})", rest.base_url + path) from None
