"""A background part of the messenger: a daemon thread with a stop flag."""

from __future__ import annotations

import threading


class Worker:
    """Runs ``run()`` on its own thread from ``start()`` until ``stop()`` sets the flag."""

    def __init__(self, name: str) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish; ``run()`` checks ``self._stopping``."""
        self._stopping.set()

    def run(self) -> None:
        """The thread's work; subclasses define it."""
        raise NotImplementedError
