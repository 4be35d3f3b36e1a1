"""Where a stream's frames go: stream name -> Redis key, symbol and parser."""

from __future__ import annotations

from dataclasses import dataclass

from contract.keys import recent_trades_key, snapshot_key
from messenger.binance import StreamKind


@dataclass(frozen=True, slots=True)
class Route:
    """One stream we carry: ``btcusdt@bookTicker`` -> ``transmute:bookticker:btcusdt``."""

    stream: str
    key: str
    symbol: str  # exchange spelling: BTCUSDT
    kind: StreamKind
    history_key: str | None = None  # where recent items are kept, for kinds that keep them


def route_for(symbol: str, kind: StreamKind) -> Route:
    """The route of one symbol's stream of one kind."""
    history = recent_trades_key(symbol) if kind.history else None
    return Route(kind.stream(symbol), snapshot_key(kind.key_kind, symbol), symbol, kind, history)
