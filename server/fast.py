"""The hot path: ``POST /snapshot/<SYMBOL>`` with a current value, answered without Flask.

Most requests a deployment sees are this one, and each succeeds. Flask's request context, URL
map and response object cost about as much as the Redis round trip itself (profiled with
py-spy under wrk: the app served ~57% of a bare one-GET WSGI app's requests a second). This
WSGI middleware answers exactly that case: POST, a plain ASCII symbol, bookTicker, no query
string and no body, and a current value in Redis. Everything else, every error included, goes
to the Flask app unchanged, which then explains it as always. Requests answered here are
counted and timed under the same route label as the view's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from contract import kinds
from contract.symbols import InvalidSymbol, normalize_symbol
from server import metrics
from server.lookup import with_age
from server.store import SnapshotStore, StoreUnavailable

PREFIX = "/snapshot/"
ROUTE = "/snapshot/<symbol>"  # the view's rule, for metrics
KIND = kinds.key_kind(kinds.BOOK_TICKER)
# Paths whose symbol (or None: not one this path answers) is remembered; forgotten all at once
# when full, so any number of odd paths cost a bounded dict.
MAX_PATHS = 4096

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastSnapshots:
    """Answer current bookTicker snapshots directly; hand every other request to ``app``."""

    def __init__(self, app: WsgiApp, store: SnapshotStore) -> None:
        self.app = app
        self.store = store
        self._symbols: dict[str, str | None] = {}
        self._count = metrics.REQUESTS.labels(ROUTE, "POST", "200")
        self._latency = metrics.LATENCY.labels(ROUTE)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        symbol = self._plain_symbol(environ)
        if symbol is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        try:
            [record] = self.store.snapshots(KIND, [symbol])
        except StoreUnavailable:
            record = None
        if record is None:
            return self.app(environ, start_response)  # the view says why there is none
        body = orjson.dumps(with_age(record, symbol, None))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self._count.inc()  # as metrics.observe does, its labelled children kept
        self._latency.observe(time.perf_counter() - started)
        return [body]

    def _plain_symbol(self, environ: dict[str, Any]) -> str | None:
        """The symbol of a request this path answers, or None for any other request."""
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
            return None
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        path: str = environ.get("PATH_INFO", "")
        try:
            return self._symbols[path]
        except KeyError:
            symbol = _path_symbol(path)
            if len(self._symbols) >= MAX_PATHS:
                self._symbols.clear()
            self._symbols[path] = symbol
            return symbol


def _path_symbol(path: str) -> str | None:
    """The symbol a path names, or None if it is not a plain ``/snapshot/<SYMBOL>``."""
    raw = path[len(PREFIX) :]
    if not path.startswith(PREFIX) or not raw.isascii() or "/" in raw:
        return None
    try:
        return normalize_symbol(raw)
    except InvalidSymbol:
        return None
