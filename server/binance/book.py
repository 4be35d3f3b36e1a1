"""The order book (the partial book streams) and the average price."""

from __future__ import annotations

from flask import Response

from server.binance.common import bp, json_body, limit_param, records, required_symbol

DEPTH_LIMITS = (5, 10, 20)


@bp.get("/avgPrice")
def avg_price() -> Response:
    """The current average price over Binance's window."""
    [r] = records("avgPrice", [required_symbol()])
    interval = str(r["interval"])
    minutes = int(interval[:-1]) if interval.endswith("m") and interval[:-1].isdigit() else 5
    return json_body({"mins": minutes, "price": r["price"], "closeTime": r["last_trade_time"]})


@bp.get("/depth")
def depth() -> Response:
    """The top of the order book, up to 20 levels (the partial book streams)."""
    symbol = required_symbol()
    limit = limit_param(
        20, lambda n: 1 <= n <= DEPTH_LIMITS[-1], f"Transmute serves up to {DEPTH_LIMITS[-1]} levels."
    )
    levels = next(n for n in DEPTH_LIMITS if n >= limit)
    [r] = records(f"depth{levels}", [symbol])
    return json_body(
        {"lastUpdateId": r["last_update_id"], "bids": r["bids"][:limit], "asks": r["asks"][:limit]}
    )
