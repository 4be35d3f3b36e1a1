"""The simulated exchange's symbol list: the recorded exchangeInfo, plus synthetic listings."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import orjson


class Catalog:
    """Symbols with their exchangeInfo entries; listings can be added or changed at run time."""

    def __init__(self, exchange_info: Path, extra_symbols: int = 0) -> None:
        doc = orjson.loads(exchange_info.read_bytes())
        self._doc: dict[str, Any] = doc
        self._symbols: dict[str, dict[str, Any]] = {s["symbol"]: s for s in doc["symbols"]}
        template = doc["symbols"][0]
        for n in range(extra_symbols):
            self.list_symbol(f"SIM{n:04d}", "USDT", "TRADING", template=template)

    def list_symbol(
        self,
        base: str,
        quote: str,
        status: str = "TRADING",
        template: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add (or change) a listing; returns its exchangeInfo entry."""
        symbol = base + quote
        entry = self._symbols.get(symbol)
        if entry is None:
            entry = copy.deepcopy(template or next(iter(self._symbols.values())))
            entry.update(symbol=symbol, baseAsset=base, quoteAsset=quote)
            self._symbols[symbol] = entry
        entry["status"] = status
        return entry

    def set_status(self, symbol: str, status: str) -> None:
        """Change a listed symbol's status (TRADING, BREAK, HALT, ...)."""
        self._symbols[symbol]["status"] = status

    def get(self, symbol: str) -> dict[str, Any] | None:
        """The exchangeInfo entry of a symbol, or None."""
        return self._symbols.get(symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    def __len__(self) -> int:
        return len(self._symbols)

    def trading(self) -> list[str]:
        """Symbols whose status is TRADING."""
        return [s for s, e in self._symbols.items() if e["status"] == "TRADING"]

    def exchange_info(self, symbols: list[str] | None = None) -> dict[str, Any]:
        """The ``GET /api/v3/exchangeInfo`` document, for all or some symbols."""
        doc = dict(self._doc)
        doc["serverTime"] = int(time.time() * 1000)
        if symbols is None:
            doc["symbols"] = list(self._symbols.values())
        else:
            doc["symbols"] = [self._symbols[s] for s in symbols]
        return doc
