"""The stream kinds Transmute serves, by Binance's name, and how each is spelled in keys.

Binance names kinds in camel case (``bookTicker``, ``aggTrade``, ``kline_1m``); our keys use
lower case (``transmute:bookticker:btcusdt``), except for a kline's interval, whose case
matters: ``kline_1m`` is one minute, ``kline_1M`` one month.
"""

from __future__ import annotations

import string

KLINE_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip
DEPTH_LEVELS = (5, 10, 20)
# The windows of Binance's rolling-window ticker streams (``<symbol>@ticker_1h``): the only
# windowSize values of ``/api/v3/ticker`` that can be answered exactly from a stream.
ROLLING_WINDOWS = ("1h", "4h", "1d")
BOOK_TICKER = "bookTicker"
DEPTH = "depth"
TRADE = "trade"
TICKER = "ticker"

KINDS: tuple[str, ...] = (
    BOOK_TICKER,
    TRADE,
    "aggTrade",
    "miniTicker",
    TICKER,
    *(f"ticker_{w}" for w in ROLLING_WINDOWS),
    "avgPrice",
    *(f"depth{n}" for n in DEPTH_LEVELS),
    DEPTH,  # the full book, kept from the diff stream (contract.order_book)
    *(f"kline_{i}" for i in KLINE_INTERVALS),
)
# Kinds whose whole market (every trading symbol) can be asked for at once: the ones a
# Binance ticker list without ``symbol`` is answered from, each seeded with one REST call.
MARKET_KINDS = (BOOK_TICKER, TICKER)
_BY_LOWER = {k.lower(): k for k in KINDS if not k.startswith("kline_")}
# Only ASCII letters change case (as a symbol's, contract.symbols): str.lower() makes U+212A (Kelvin
# sign) a "k" and U+0130 (dotted capital I) an "i", so "\u212aline_1m" would have been kline_1m.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def key_kind(kind: str) -> str:
    """The key segment of a kind: ``bookticker``, ``aggtrade``, ``kline_1M``."""
    if kind.startswith("kline_"):
        return kind
    return kind.lower()


def resolve_kind(raw: str) -> str | None:
    """Binance's name of a kind a user wrote in any case (``BOOKTICKER``, ``Kline_1m``), or None.

    A kline's interval must be spelled exactly (``1m`` is a minute, ``1M`` a month).
    """
    lower = raw.translate(_ASCII_LOWER)
    if lower.startswith("kline_"):
        kind = "kline_" + raw[len("kline_") :]
        return kind if kind in KINDS else None
    return _BY_LOWER.get(lower)


KIND_BY_KEY: dict[str, str] = {key_kind(k): k for k in KINDS}
