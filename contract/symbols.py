"""How a symbol is spelled: by users, by Binance, and in Redis keys.

Users may write ``BTC_USDT``, ``btc_usdt``, ``BTCUSDT`` or ``btcusdt``. Binance's REST API
spells it ``BTCUSDT``; its stream names and our Redis keys use ``btcusdt``.
"""

from __future__ import annotations

import string

# Binance symbols are base + quote asset, today at most 20 characters. Non-ASCII
# letters do occur (Binance lists some symbols in UTF-8), so letters are not ASCII-only.
MIN_SYMBOL_LENGTH = 2
MAX_SYMBOL_LENGTH = 20
# Only ASCII letters change case: str.upper() makes U+017F (long s) an "S" and U+0131 (dotless i)
# an "I", so "BTCU\u017fDT" would have been taken as BTCUSDT, a text that is not its spelling.
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


class InvalidSymbol(ValueError):
    """The text cannot be a Binance symbol; the message says why, for the user."""


def normalize_symbol(raw: str) -> str:
    """Return the exchange spelling (``BTCUSDT``) of a user's spelling, or raise InvalidSymbol."""
    if len(raw) > MAX_SYMBOL_LENGTH + 1:
        raise InvalidSymbol(f"symbol is too long (at most {MAX_SYMBOL_LENGTH} characters)")
    if raw.count("_") > 1 or raw.startswith("_") or raw.endswith("_"):
        raise InvalidSymbol("symbol may contain one underscore, between base and quote asset")
    symbol = raw.replace("_", "").translate(_ASCII_UPPER)
    if not MIN_SYMBOL_LENGTH <= len(symbol) <= MAX_SYMBOL_LENGTH:
        raise InvalidSymbol(f"symbol must be {MIN_SYMBOL_LENGTH} to {MAX_SYMBOL_LENGTH} letters or digits")
    for ch in symbol:
        if not (ch.isascii() and ch.isalnum()) and not (not ch.isascii() and ch.isalpha()):
            raise InvalidSymbol(f"symbol contains {ch!r}; only letters and digits are allowed")
    return symbol


def stream_symbol(symbol: str) -> str:
    """The spelling used in stream names and Redis keys: ``btcusdt``."""
    return symbol.lower()
