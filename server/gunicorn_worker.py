"""Gunicorn's gevent worker, with gunicorn's own error answers in JSON like every other one.

Gunicorn answers by itself, before the application sees anything, a request it cannot parse
or will not read: a request line over 8,190 bytes (414), too many or too large headers (431),
a malformed request line, method or header (400). Its answer is an HTML page; this worker
writes ``{"status_code": N, "error": "..."}`` instead. The path is not known at that point
(it may be what could not be read), so the shape is ours even under ``/api/v3/``.
"""

from __future__ import annotations

import socket

import orjson
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn's ``util.write_error``, answering JSON."""
    error = f"{reason}: {mesg}" if mesg else reason
    body = orjson.dumps({"status_code": status_int, "error": error})  # gunicorn reads latin-1: text
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorWorker(GeventWorker):  # type: ignore[misc]
    """``worker_class`` in gunicorn_conf.py."""

    def init_process(self) -> None:
        # handle_error() calls util.write_error(...) through the module: this process's only
        # server is ours, so its error writer is replaced for the whole process, once.
        util.write_error = write_json_error
        super().init_process()
