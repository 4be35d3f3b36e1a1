"""When a probe's frame left the exchange: the start of a latency measurement.

``POST /_sim/book`` sets a top of book and publishes it at once, but each connection's frame joins
that connection's outbox, behind the frames it has not written yet; under a flood (with the
simulator on the same cores as what it feeds) that wait is part of the simulator, not of the
client. Binance's "sent" is when a frame is written to its connection, so each probe's frame is
timed when a connection hands it to its transport (just before the write, as the benchmark's feed
does: a later mark would understate the latency when the write waits for the socket to drain),
and ``GET /_sim/book/<symbol>/written?u=N`` answers when it was queued and first written.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# Probes whose times are kept (the oldest forgotten first): a benchmark asks right after each one.
KEPT = 4096


class _Times:
    __slots__ = ("queued", "written")

    def __init__(self) -> None:
        self.queued = time.time() * 1000
        self.written: float | None = None

    def mark_written(self) -> None:
        if self.written is None:  # the first connection to write it sent it
            self.written = time.time() * 1000


class Probes:
    """The queued and first written times (epoch ms) of the latest probes, by symbol and update id."""

    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._times: OrderedDict[tuple[str, int], _Times] = OrderedDict()

    def queued(self, symbol: str, u: int) -> Callable[[], None]:
        """A probe's frame is queued now; returns what a connection calls just before writing it."""
        times = self._times[symbol, u] = _Times()
        self._times.move_to_end((symbol, u))
        while len(self._times) > self._kept:
            self._times.popitem(last=False)
        return times.mark_written

    def times(self, symbol: str, u: int) -> tuple[float, float | None] | None:
        """(queued, first written or None), epoch ms; None if no such probe is kept."""
        found = self._times.get((symbol, u))
        return None if found is None else (found.queued, found.written)
