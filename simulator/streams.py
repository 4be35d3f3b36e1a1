"""Stream names as Binance spot accepts them (shared/binance-protocol.md section 2)."""

from __future__ import annotations

import re

KLINE_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip

_SYMBOL_STREAM = re.compile(
    r"^(?P<symbol>[a-z0-9]+|[^\x00-\x7f@A-Z]+[a-z0-9]*)@(?P<kind>"
    r"bookTicker|trade|aggTrade|miniTicker|ticker|avgPrice|"
    r"ticker_(?:1h|4h|1d)|"
    rf"kline_(?:{'|'.join(KLINE_INTERVALS)})(?:@\+08:00)?|"
    r"depth(?:5|10|20)?(?:@100ms|@1000ms)?)$"
)
_MARKET_STREAMS = frozenset({"!miniTicker@arr", "!ticker_1h@arr", "!ticker_4h@arr", "!ticker_1d@arr"})


def parse_stream(name: str) -> tuple[str, str] | None:
    """``btcusdt@bookTicker`` -> (``BTCUSDT``, ``bookTicker``); None if not a valid stream."""
    if name in _MARKET_STREAMS:
        return ("", name)
    match = _SYMBOL_STREAM.match(name)
    if match is None:
        return None
    return match["symbol"].upper(), match["kind"]
