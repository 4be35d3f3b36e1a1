"""The heap the messenger starts with, kept out of the garbage collector's full collections.

What the messenger holds from its first seconds on (its modules, the exchange's symbol list, a
connection's state, each streamed symbol's entry in the book) lives as long as it does, yet every
full collection of the cyclic garbage collector walks all of it, with every thread stopped: 28 ms
at 2,000 symbols in a 20,000 frames/s flood, about every 40 s, a frame arriving meanwhile 28 ms
later in Redis. Once, FREEZE_AFTER_S after the start (the symbols streamed by then), ``gc.freeze``
moves everything alive to the collector's permanent generation, which no collection walks: the
next full collection took 0.6 ms. Objects made since are collected as before; a frozen one is
still freed by its reference count when let go of (only a frozen cycle would stay).
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

FREEZE_AFTER_S = 10.0


class Heap:
    """Freezes the heap once, ``after_s`` after ``started`` (monotonic seconds): ``tick`` it."""

    def __init__(self, started: float, after_s: float = FREEZE_AFTER_S) -> None:
        self._due = started + after_s
        self.frozen = False

    def tick(self, now: float) -> None:
        if self.frozen or now < self._due:
            return
        gc.collect()  # what is garbage now is collected, not frozen
        gc.freeze()
        self.frozen = True
        logger.info("heap: %d objects frozen out of full collections", gc.get_freeze_count())
