"""Rolling-window statistics (``GET /api/v3/ticker``, ``<symbol>@ticker_<1h|4h|1d>``) from the trades.

As Binance documents: ``closeTime`` is now, ``openTime`` is ``closeTime - windowSize`` rounded down
to a minute (so the window is up to 59,999 ms wider than asked), and the numbers are those of
every trade at ``openTime <= time <= closeTime``. A window without a trade has its previous last
price as open, high, low and last, zero volumes, ``firstId``/``lastId`` -1 and ``count`` 0.
"""

from __future__ import annotations

import re
from typing import Any

from simulator.stats import SCALE, Stats, fmt
from simulator.tape import Tape

WINDOW_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_WINDOW_MAX = {"m": 59, "h": 23, "d": 7}
_WINDOW = re.compile(r"^([1-9][0-9]?)([mhd])$")
STREAM_WINDOWS = ("1h", "4h", "1d")
FULL_NAMES = {
    "priceChange": "p", "priceChangePercent": "P", "weightedAvgPrice": "w", "openPrice": "o",
    "highPrice": "h", "lowPrice": "l", "lastPrice": "c", "volume": "v", "quoteVolume": "q",
    "openTime": "O", "closeTime": "C", "firstId": "F", "lastId": "L", "count": "n",
}  # fmt: skip
MINI_NAMES = ("openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume", "openTime",
              "closeTime", "firstId", "lastId", "count")  # fmt: skip


def window_ms(text: str) -> int | None:
    """``windowSize`` in ms: ``1m``..``59m``, ``1h``..``23h``, ``1d``..``7d``; None otherwise."""
    match = _WINDOW.match(text)
    if match is None or int(match[1]) > _WINDOW_MAX[match[2]]:
        return None
    return int(match[1]) * WINDOW_UNITS_MS[match[2]]


def letters(tape: Tape, window: int, now_ms: int) -> dict[str, Any]:
    """The window's numbers under the stream's letters (``o``, ``h``, ... ``n``)."""
    open_ms = (now_ms - window) // 60_000 * 60_000
    s: Stats | None = tape.stats(open_ms, now_ms + 1)
    if s is None:
        last = fmt(tape.price_before(open_ms) or 0)
        zero = fmt(0)
        return {"p": zero, "P": "0.000", "w": zero, "o": last, "h": last, "l": last, "c": last, "v": zero,
                "q": zero, "O": open_ms, "C": now_ms, "F": -1, "L": -1, "n": 0}  # fmt: skip
    change = s.close - s.open
    return {
        "p": fmt(change), "P": f"{100 * change / s.open:.3f}", "w": fmt(s.quote * SCALE // s.volume),
        "o": fmt(s.open), "h": fmt(s.high), "l": fmt(s.low), "c": fmt(s.close), "v": fmt(s.volume),
        "q": fmt(s.quote), "O": open_ms, "C": now_ms, "F": s.first_id, "L": s.last_id, "n": s.count,
    }  # fmt: skip


def rest(symbol: str, values: dict[str, Any], full: bool) -> dict[str, Any]:
    """The ``GET /api/v3/ticker`` entry (``type=FULL`` or ``MINI``)."""
    names = FULL_NAMES if full else MINI_NAMES
    return {"symbol": symbol, **{name: values[FULL_NAMES[name]] for name in names}}


def event(symbol: str, window_name: str, values: dict[str, Any], event_ms: int) -> dict[str, Any]:
    """The ``<symbol>@ticker_<window>`` event (``e``: ``1hTicker``, ``4hTicker``, ``1dTicker``)."""
    return {"e": f"{window_name}Ticker", "E": event_ms, "s": symbol, **values}
