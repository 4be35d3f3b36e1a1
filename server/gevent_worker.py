"""Gunicorn's gevent worker, taking connections in batches and answering its own errors in JSON.

Batches:

With more than one worker, gunicorn has each accept a single connection per turn of its event
loop, to spread connections evenly over the workers. Under a flood of new connections (thousands
of slow clients, each cut at its deadline) a turn of a busy loop is long, the kernel's accept
queue fills (2,000 connections were seen waiting) and a normal client waits behind all of them,
for seconds. Our workers hold 10,000 connections each and answer in a few milliseconds, so they
need no such fine spreading: this worker accepts up to ``ACCEPT_BATCH`` waiting connections a
turn (gevent's own default), and the queue stays empty.

JSON errors: gunicorn answers by itself, before the application sees anything, a request it
cannot parse or will not read: a request line over 8,190 bytes (414), too many or too large
headers (431), a malformed request line, method or header (400). Its answer is an HTML page;
this worker writes ``{"status_code": N, "error": "..."}`` instead. The path is not known at
that point (it may be what could not be read), so the shape is ours even under ``/api/v3/``.
"""

from __future__ import annotations

import os
import signal
import socket

import orjson
from gevent.server import StreamServer
from gunicorn import util
from gunicorn.workers import ggevent

from server.shutdown import Shutdown

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


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn's ``util.write_error``, answering JSON."""
    error = f"{reason}: {mesg}" if mesg else reason
    body = orjson.dumps({"status_code": status_int, "error": error})  # gunicorn reads latin-1: text
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _stop_booting(sig: int, frame: object) -> None:
    """A stop signal before the worker serves anything: exit now, nothing to finish."""
    os._exit(0)


class GeventWorker(ggevent.GeventWorker):  # type: ignore[misc]
    """``worker_class`` for server.gunicorn_conf."""

    def init_process(self) -> None:
        """Answer gunicorn's own errors in JSON, then start as gunicorn's gevent worker does."""
        # Until gunicorn sets this worker's handlers (after gevent's patching, a moment on a busy
        # machine), the arbiter's are in force, inherited at the fork: they only queue a signal
        # for the arbiter's loop, which never runs here. A Ctrl-C while the worker booted was
        # lost, and the arbiter waited out its 30 s graceful timeout before killing it. A booting
        # worker has nothing to finish: a stop of any kind ends it at once.
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
            signal.signal(sig, _stop_booting)
        # handle_error() calls util.write_error(...) through the module: this process's only
        # server is ours, so its error writer is replaced for the whole process, once.
        util.write_error = write_json_error
        super().init_process()

    def handle_quit(self, sig: int, frame: object) -> None:
        """A quick stop (Ctrl-C, SIGQUIT): exit now, as gunicorn's own does, but without its
        ``sys.exit`` inside a greenlet, which gevent reported with two tracebacks a worker."""
        self.alive = False
        self.log.info("Worker exiting (pid: %s)", self.pid)
        os._exit(0)

    def handle_exit(self, sig: int, frame: object) -> None:
        """A graceful stop (SIGTERM): live-push streams end now, so the stop waits for requests
        in flight, not for clients that would follow a stream for as long as it lasts."""
        Shutdown.stopping = True
        super().handle_exit(sig, frame)

    def handle_request(self, listener_name: str, req: object, sock: socket.socket, addr: object) -> None:
        """As gunicorn's, but a connection is not kept alive past its request once the worker is
        stopping (a stream that ended at the stop would otherwise hold it for the keepalive)."""
        super().handle_request(listener_name, req, sock, addr)
        if not self.alive:
            raise StopIteration  # gunicorn's keepalive loop closes the connection on it

    def run(self) -> None:
        """Serve as gunicorn's gevent worker does, with batch-accepting servers."""
        # GeventWorker.run() makes its servers from this module-level name, in this process only.
        ggevent.StreamServer = BatchAcceptingServer
        super().run()
