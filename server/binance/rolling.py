"""``GET /api/v3/ticker``: rolling-window statistics, exactly as Binance's window streams send them.

Binance accepts ``windowSize`` 1m to 59m, 1h to 23h and 1d to 7d (default 1d), and computes any of
them on request from its trade database. Transmute holds no trade history to compute a window from;
it answers the windows Binance itself streams (``<symbol>@ticker_<1h|4h|1d>``, contract.kinds.
ROLLING_WINDOWS) from those streams, and every other window Binance accepts with a 400 that names
the ones it answers: never an approximation. ``openTime`` and ``closeTime`` are those of the last
update (pushed every second), where Binance's REST answer closes the window at the request.
"""

from __future__ import annotations

import re

from flask import Response, request

from contract import kinds
from server.binance.common import BinanceError, bp, one_or_many, records, symbols_param
from server.binance.tickers import ticker_type

DEFAULT_WINDOW = "1d"
# Binance's windows: a number and a unit, units not combined ("1d2h" is not a window).
WINDOW = re.compile(r"^([1-9][0-9]?)([mhd])$")
UNIT_MAX = {"m": 59, "h": 23, "d": 7}
SUPPORTED = ", ".join(kinds.ROLLING_WINDOWS[:-1]) + " and " + kinds.ROLLING_WINDOWS[-1]

MINI = {
    "symbol": "symbol", "openPrice": "open", "highPrice": "high", "lowPrice": "low", "lastPrice": "close",
    "volume": "volume", "quoteVolume": "quote_volume", "openTime": "open_time", "closeTime": "close_time",
    "firstId": "first_trade_id", "lastId": "last_trade_id", "count": "trades",
}  # fmt: skip
FULL = {
    "symbol": "symbol", "priceChange": "price_change", "priceChangePercent": "price_change_percent",
    "weightedAvgPrice": "weighted_avg_price", **{k: v for k, v in MINI.items() if k != "symbol"},
}  # fmt: skip


def window_kind() -> str:
    """The stream kind of ``windowSize`` (``ticker_1d`` by default), or Binance's 400."""
    window = request.args.get("windowSize", DEFAULT_WINDOW)
    match = WINDOW.match(window)
    if match is None or int(match[1]) > UNIT_MAX[match[2]]:
        raise BinanceError(400, -1130, "Data sent for parameter 'windowSize' is not valid.")
    if window not in kinds.ROLLING_WINDOWS:
        raise BinanceError(
            400,
            -1130,
            f"windowSize {window} is not supported here: Transmute answers windowSize {SUPPORTED}, "
            "exactly, from Binance's rolling-window ticker streams (any other window would be an "
            "approximation).",
        )
    return f"ticker_{window}"


@bp.get("/ticker")
def rolling_ticker() -> Response:
    """Rolling-window statistics (``windowSize`` 1h, 4h or 1d; ``type`` FULL or MINI) of ``symbol``
    or ``symbols`` (one is required)."""
    names = FULL if ticker_type() == "FULL" else MINI
    kind = window_kind()
    symbols = symbols_param()
    if symbols is None:
        raise BinanceError(400, -1102, "Param 'symbol' or 'symbols' must be sent, but both were empty/null!")
    docs = [{ours: r[theirs] for ours, theirs in names.items()} for r in records(kind, symbols)]
    return one_or_many(symbols, docs)
