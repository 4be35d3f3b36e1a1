"""Gunicorn's gevent worker, taking waiting connections in batches rather than one a turn.

With more than one worker, gunicorn has each accept a single connection per turn of its event
loop, to spread connections evenly over the workers. Under a flood of new connections (thousands
of slow clients, each cut at its deadline) a turn of a busy loop is long, the kernel's accept
queue fills (2,000 connections were seen waiting) and a normal client waits behind all of them,
for seconds. Our workers hold 10,000 connections each and answer in a few milliseconds, so they
need no such fine spreading: this worker accepts up to ``ACCEPT_BATCH`` waiting connections a
turn (gevent's own default), and the queue stays empty.
"""

from __future__ import annotations

from gevent.server import StreamServer
from gunicorn.workers import ggevent

ACCEPT_BATCH = 100


class BatchAcceptingServer(StreamServer):  # type: ignore[misc]
    """gevent's server, with an accept batch that gunicorn's setting of 1 leaves alone."""

    @property
    def max_accept(self) -> int:
        """Connections accepted a turn of the loop."""
        return ACCEPT_BATCH

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        """Gunicorn sets 1 when it runs several workers; the batch stays."""


class GeventWorker(ggevent.GeventWorker):  # type: ignore[misc]
    """``worker_class`` for server.gunicorn_conf."""

    def run(self) -> None:
        """Serve as gunicorn's gevent worker does, with batch-accepting servers."""
        # GeventWorker.run() makes its servers from this module-level name, in this process only.
        ggevent.StreamServer = BatchAcceptingServer
        super().run()
