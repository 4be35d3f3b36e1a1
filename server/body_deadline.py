"""Request bodies are read whole, within a deadline, before the application sees them.

Gunicorn bounds how long a request's headers may take (its keepalive, 5 s, under the gevent
worker) but not its body: a client that declares ``Content-Length: 1000`` and then sends a
byte every 5 s keeps its connection, and its slot among the worker's connections, for as long
as it likes, and enough such clients leave none for anybody else. This WSGI middleware, the
outermost layer, reads every body (at most ``max_bytes`` + 1 of it) within ``BODY_TIMEOUT_MS``
(5 s) of the end of its headers, and answers a body that is not all there by then with a JSON 408;
the connection is then closed. A body that came with its headers, as every real client's small
JSON document does, is read at once. A chunked body is handed on with its length, so the app
reads (or refuses, over the limit) it as any other.

Together with room for many connections per worker (server/gunicorn_conf.py) this keeps a crowd
of slow clients from starving the others: each holds a slot for at most the deadline, and there
are far more slots than a crowd from one machine holds.

The deadline is a ``gevent.Timeout``: under gunicorn's gevent worker it interrupts the read
wherever it waits, however the bytes trickle in.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import orjson

from server import metrics
from server.errors import BINANCE_PREFIX

STATUS = "408 Request Timeout"
ROUTE = "<body timeout>"  # the route label of these answers in the metrics

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyDeadline:
    """Read each request's body within ``timeout_s``, or answer 408; then hand on to ``app``."""

    def __init__(self, app: WsgiApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        wanted = self._to_read(environ)
        if wanted == 0:
            return self.app(environ, start_response)
        started = time.perf_counter()
        stream = environ["wsgi.input"]
        timeout = gevent.Timeout(self.timeout_s)
        timeout.start()
        try:
            body = _read(stream, wanted)
        except gevent.Timeout as exc:
            if exc is not timeout:
                raise
            return self._too_slow(environ, start_response, stream, started)
        finally:
            timeout.close()
        environ["wsgi.input"] = io.BytesIO(body)
        # From here on the body has a length, chunked or not (one past the limit: the app's 413).
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)
        return self.app(environ, start_response)

    def _to_read(self, environ: dict[str, Any]) -> int:
        """How much of the body to read now: a chunked one up to one byte past the limit (so the
        app can tell it is too large); 0 when there is none, or one the app refuses (413) unread
        (gunicorn then drains or drops it within its keepalive)."""
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.max_bytes + 1
        raw = environ.get("CONTENT_LENGTH") or "0"
        length = int(raw) if raw.isdigit() else 0
        return length if length <= self.max_bytes else 0

    def _too_slow(
        self, environ: dict[str, Any], start_response: Callable[..., Any], stream: Any, started: float
    ) -> Iterable[bytes]:
        # Gunicorn closes a connection whose body read failed, instead of waiting for the rest.
        if hasattr(stream, "failed"):
            stream.failed = True
        error = f"Request body not received within {self.timeout_s:g} s."
        path: str = environ.get("PATH_INFO", "")
        doc = (
            {"code": -1000, "msg": error}
            if path.startswith(BINANCE_PREFIX)
            else {"status_code": 408, "error": error}
        )
        body = orjson.dumps(doc)
        start_response(STATUS, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        metrics.observe(ROUTE, environ.get("REQUEST_METHOD", ""), 408, started)
        return [body]


def _read(stream: Any, wanted: int) -> bytes:
    """Up to ``wanted`` bytes: all of them, or fewer if the client ends the body first."""
    parts = []
    while wanted > 0:
        part = stream.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)
