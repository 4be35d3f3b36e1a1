"""Binance's public market-data REST API, answered from the streams: a client changes its base URL.

``GET /api/v3/...`` with Binance's parameter names, JSON shapes and error bodies
(``{"code": -1121, "msg": "Invalid symbol."}``), one module per family of endpoints. A symbol not
streamed yet is streamed on demand. When a value cannot be vouched for, the answer is HTTP 503 with
``{"code": -1001, ...}``: Binance's "internal error; try again", never an old value.
"""

from __future__ import annotations

from server.binance import book, klines, market, rolling, tickers, trades, weight
from server.binance.common import bp

__all__ = ["book", "bp", "klines", "market", "rolling", "tickers", "trades", "weight"]
