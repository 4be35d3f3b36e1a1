"""A background part of the messenger: a daemon thread with a stop flag.

A part whose ``run()`` raises has a defect, not a fault it knows how to wait out (those it
handles itself: Redis down, the exchange unreachable). The messenger must not carry on without
it (without its writer nothing is written, and every value goes unservable while the process
looks alive), so the exception is logged and kept, and the messenger's main loop stops the
process (``check``): what started it (the member launcher, scripts/run-local, Docker's restart
policy) starts it anew.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

logger = logging.getLogger(__name__)


class PartDied(RuntimeError):
    """A background part's thread ended with an exception: the messenger stops."""


class Worker:
    """Runs ``run()`` on its own thread from ``start()`` until ``stop()`` sets the flag."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.died: BaseException | None = None  # what ended run(), if it raised
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish; ``run()`` checks ``self._stopping``."""
        self._stopping.set()

    def run(self) -> None:
        """The thread's work; subclasses define it."""
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a defect: logged once, then the main loop stops the process
            self.died = exc
            logger.critical("%s: stopped by an unexpected error; the messenger stops so that it is "
                            "started anew", self.name, exc_info=True)  # fmt: skip


def check(parts: Iterable[Worker]) -> None:
    """Raise PartDied if any part's thread ended with an exception."""
    for part in parts:
        if part.died is not None:
            raise PartDied(f"{part.name} died: {part.died!r}")
