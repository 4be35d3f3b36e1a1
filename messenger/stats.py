"""The periodic status line: what the messenger is doing, in rates since the last line."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from messenger.book import Book
    from messenger.supervisor import Supervisor
    from messenger.writer import Writer

logger = logging.getLogger(__name__)


class Stats:
    """Logs frames/s and writes/s (and what went wrong) every ``interval_s``."""

    def __init__(self, supervisor: Supervisor, book: Book, writer: Writer, interval_s: float) -> None:
        self.supervisor = supervisor
        self.book = book
        self.writer = writer
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._last_frames = 0
        self._last_writes = 0

    def maybe_log(self, now: float) -> None:
        """Log the line if it is due."""
        elapsed = now - self._last
        if elapsed < self.interval_s:
            return
        conns = self.supervisor.conns
        frames = self.supervisor.frames()
        writes = self.writer.writes
        frame_rate = (frames - self._last_frames) / elapsed
        write_rate = (writes - self._last_writes) / elapsed
        logger.info(
            "stats: %d conns, %d streams, %.0f frames/s (%d in all), %.0f writes/s, %d older dropped, "
            "%d malformed, %d unknown, redis %s, reconnects %s",
            len(conns),
            sum(len(c.subscribed) for c in conns),
            frame_rate,
            frames,
            write_rate,
            self.book.older_dropped,
            self.supervisor.total("malformed"),
            self.supervisor.total("unknown"),
            "ok" if self.writer.healthy else "DOWN",
            dict(self.supervisor.reconnects) or "none",
        )
        self._last, self._last_frames, self._last_writes = now, frames, writes
