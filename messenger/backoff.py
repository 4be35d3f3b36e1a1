"""Capped exponential backoff with jitter, for reconnects and Redis retries."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double from ``base_s`` up to ``cap_s``, each jittered to 50-100 %.

    The jitter keeps many connections that failed together from retrying together;
    the lower half is kept so a delay never collapses to nothing.
    """

    def __init__(self, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempts = 0
        self._rand = rand

    def next_delay(self, floor_s: float = 0.0) -> float:
        """The delay before the next attempt (at least ``floor_s``); counts the attempt."""
        full = min(self.cap_s, self.base_s * float(2 ** min(self.attempts, 32)))
        self.attempts += 1
        return max(floor_s, full / 2 + self._rand() * full / 2)

    def reset(self) -> None:
        """The last attempt went well: start again from ``base_s``."""
        self.attempts = 0
