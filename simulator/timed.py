"""The streams Binance pushes on a timer: depth, tickers, average price, klines.

Each is pushed every N ticks of 100 ms (Binance's speeds: 100 ms or 1 s for depth, 1 s for
tickers and ``kline_1s``, 2 s for other klines). A kline stream also sends, at the first tick
after its window closes, the closed candle once with ``"x": true`` (the same numbers REST answers
for that window from then on), then goes on with the next window. The window a stream is in is
taken when it is subscribed, not at its first tick: whoever subscribes just before a close gets
that close, as on Binance.
"""

from __future__ import annotations

from collections.abc import Container

from simulator import klines
from simulator.clock import now_ms
from simulator.depth_feed import is_diff
from simulator.market import Market
from simulator.streams import parse_stream
from simulator.windows import next_open, open_of, stream_time_zone

TICK_S = 0.1
MAX_CLOSES = 60  # windows closed in one tick (only 1 s ones, after a long stall) sent at most


def ticks_between(kind: str) -> int | None:
    """How many ticks apart a timed stream is pushed; None for streams pushed on change."""
    if kind.startswith("depth") and not is_diff(kind):
        return 1 if kind.endswith("@100ms") else 10
    if kind.startswith("kline_"):
        return 10 if kind.partition("@")[0] == "kline_1s" else 20
    if kind in ("ticker", "miniTicker", "avgPrice") or kind.startswith("ticker_"):
        return 10
    return None


class TimedStreams:
    """The timed streams someone subscribes to, and the kline windows they have open."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.streams: dict[str, tuple[str, str, int]] = {}  # stream -> symbol, kind, every N ticks
        self._kline_opens: dict[str, int] = {}  # kline stream -> open time of its window

    def add(self, stream: str) -> None:
        """A stream has its first subscriber (ignored unless it is a timed one)."""
        parsed = parse_stream(stream)
        every = ticks_between(parsed[1]) if parsed else None
        if parsed and every:
            self.streams[stream] = (parsed[0], parsed[1], every)
            if parsed[1].startswith("kline_"):
                interval, _, zone = parsed[1][6:].partition("@")
                self._kline_opens[stream] = open_of(now_ms(), interval, stream_time_zone(zone))

    def remove(self, stream: str) -> None:
        """A stream has lost its last subscriber."""
        self.streams.pop(stream, None)
        self._kline_opens.pop(stream, None)

    def due(self, tick: int, listed: Container[str] | None = None) -> list[tuple[str, bytes]]:
        """The frames to send at this tick: closed candles first, then the periodic ones."""
        frames = self._closed_klines()
        for stream, (symbol, kind, every) in list(self.streams.items()):
            if tick % every == 0 and (listed is None or symbol in listed):
                frames.append((stream, self.payload(symbol, kind)))
        return frames

    def payload(self, symbol: str, kind: str) -> bytes:
        """The current frame of a timed stream."""
        market = self.market
        if kind.startswith("depth"):
            return market.depth_payload(symbol, int(kind[5:].partition("@")[0]))
        if kind.startswith("kline_"):
            interval, _, zone = kind[6:].partition("@")
            return market.kline_payload(symbol, interval, stream_time_zone(zone))
        if kind.startswith("ticker_"):
            return market.window_ticker_payload(symbol, kind[7:])
        if kind == "ticker":
            return market.ticker_payload(symbol)
        if kind == "miniTicker":
            return market.mini_ticker_payload(symbol)
        return market.avg_price_payload(symbol)

    def _closed_klines(self) -> list[tuple[str, bytes]]:
        frames: list[tuple[str, bytes]] = []
        now = now_ms()
        for stream, (symbol, kind, _) in self.streams.items():
            if not kind.startswith("kline_"):
                continue
            interval, _, zone = kind[6:].partition("@")
            offset = stream_time_zone(zone)
            current = open_of(now, interval, offset)
            seen = self._kline_opens.get(stream)
            self._kline_opens[stream] = current
            if seen is None or seen >= current:
                continue
            tape = self.market.tape(symbol)
            start, close = max(seen, open_of(now - MAX_CLOSES * 1000, interval, offset)), None
            while start < current:
                candle = klines.candle(tape, interval, offset, start, close)
                frames.append((stream, candle.frame(symbol, interval, True, now)))
                start, close = next_open(start, interval, offset), candle.price
        return frames
