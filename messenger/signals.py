"""Signal capture: handlers only set flags; the previous handlers come back afterwards."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopFlags:
    """``stop``: finish gracefully. ``force``: a second SIGINT, skip the niceties."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.force = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: set a flag, nothing else."""
        if self.stop.is_set() and signum == signal.SIGINT:
            self.force = True
        self.stop.set()


@contextmanager
def captured(flags: StopFlags) -> Iterator[StopFlags]:
    """Route SIGINT and SIGTERM to ``flags`` inside the block."""
    previous = {sig: signal.signal(sig, flags.handle) for sig in HANDLED}
    try:
        yield flags
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
