"""Where a stream's frames go: stream name -> Redis key, symbol and parser."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from contract.keys import snapshot_key
from contract.trade_history import tail_key
from messenger.binance import StreamKind


@dataclass(frozen=True, slots=True)
class Route:
    """One stream we carry: ``btcusdt@bookTicker`` -> ``transmute:bookticker:btcusdt``."""

    stream: str
    key: str
    symbol: str  # exchange spelling: BTCUSDT
    kind: StreamKind
    history_key: str | None = None  # the tail of its kept list, for kinds that keep one (trades)

    @property
    def series(self) -> tuple[str, str]:
        """A kline route's candle series (messenger.kline_history): ``("BTCUSDT", "1m")``."""
        return self.symbol, self.kind.name.removeprefix("kline_")


# Routes made once: the messenger plans every stream again every second (messenger.service), and
# making 2,000 routes afresh took ~5 ms of the one GIL each time (the writer's batches waited).
ROUTES_CACHED = 65536


@functools.lru_cache(maxsize=ROUTES_CACHED)
def route_for(symbol: str, kind: StreamKind) -> Route:
    """The route of one symbol's stream of one kind (the same object for the same arguments)."""
    history = tail_key(kind.key_kind, symbol) if kind.history else None
    return Route(kind.stream(symbol), snapshot_key(kind.key_kind, symbol), symbol, kind, history)
