"""The order book (the full local book, contract.order_book) and the average price."""

from __future__ import annotations

from flask import Response

from server.binance.common import binance_errors, bp, json_body, limit_param, records, required_symbol
from server.books import DEFAULT_LIMIT, MAX_LIMIT, PARTIAL_HEADER, clamp
from server.views import books

LIMIT_HINT = f"limit is 1 or more levels (more than {MAX_LIMIT} is {MAX_LIMIT})."


@bp.get("/avgPrice")
def avg_price() -> Response:
    """The current average price over Binance's window."""
    [r] = records("avgPrice", [required_symbol()])
    interval = str(r["interval"])
    minutes = int(interval[:-1]) if interval.endswith("m") and interval[:-1].isdigit() else 5
    return json_body({"mins": minutes, "price": r["price"], "closeTime": r["last_trade_time"]})


@bp.get("/depth")
def depth() -> Response:
    """The order book to ``limit`` levels a side (default 100; more than 5,000 is 5,000, as Binance)."""
    symbol = required_symbol()
    limit = clamp(limit_param(DEFAULT_LIMIT, lambda n: n >= 1, LIMIT_HINT))
    with binance_errors():
        [book] = books().books([symbol], limit)
    return answer(book.binance(limit), book.partial(limit))


def answer(body: bytes, partial: tuple[str, ...]) -> Response:
    """Binance's answer, and which sides stop short of ``limit`` (beyond what is known exactly)."""
    response = Response(body, mimetype="application/json")
    if partial:
        response.headers[PARTIAL_HEADER] = ",".join(partial)
    return response
