"""One heavy load at a time on the test machine, across pytest workers.

`make test` runs two pytest workers on a 2-core machine. A compose stack (a dozen containers, image
builds) and the chaos run (a flood of on-demand streams against a messenger, Redis and gunicorn)
each fill both cores on their own; beside each other, each measures the other's load: Redis
answered the chaos run's server after its 0.5 s timeout for over a second (503s through a burst),
and Sentinel in the compose stack did not promote the replica within 120 s. So whichever comes
first holds this lock file until it is done, and the other waits for it.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_FILE = Path(tempfile.gettempdir()) / "transmute-tests-docker-engine.lock"


class MachineLock:
    """The lock, taken by ``acquire`` (waiting for whoever holds it) and let go by ``release``."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        self._file = LOCK_FILE.open("ab")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None


@contextmanager
def holding_the_machine() -> Iterator[None]:
    """Hold the lock for the block."""
    lock = MachineLock()
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
