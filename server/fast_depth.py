"""The order book's hot path: ``GET /api/v3/depth`` answerable at once, without Flask.

Order books are asked for often and deep (1,000 levels is ~60 KB), and Flask's request context,
URL map, hooks and response object cost about as much as the read itself. This WSGI middleware
answers the case that needs nothing else: ``symbol`` and ``limit`` as Binance spells them (each at
most once, nothing else), and a book in Redis that is current and deep enough (server.books). Every
other request, every error, every wait for a book or a deeper one, goes to the Flask view unchanged,
which does the same and says what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from contract.symbols import InvalidSymbol, normalize_symbol
from server import metrics
from server.binance.weight import HEADER
from server.books import DEFAULT_LIMIT, PARTIAL_HEADER, BookReader, clamp
from server.params import whole_number

PATH = ROUTE = "/api/v3/depth"
PARAMS = frozenset({"symbol", "limit"})
MAX_QUERY = 100
# Query strings judged, per process: bots ask the same few again and again. Forgotten when full.
MAX_QUERIES = 4096

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastDepth:
    """Answer plain order book requests that can be answered now; hand every other one to ``app``."""

    def __init__(self, app: WsgiApp, books: BookReader) -> None:
        self.app = app
        self.books = books
        self._queries: dict[str, tuple[str, int] | None] = {}
        self._count = metrics.REQUESTS.labels(ROUTE, "GET", "200")
        self._latency = metrics.LATENCY.labels(ROUTE)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        raw: str = environ.get("QUERY_STRING", "")
        try:
            query = self._queries[raw]
        except KeyError:
            query = _plain_query(raw)
            if len(self._queries) >= MAX_QUERIES:
                self._queries.clear()
            self._queries[raw] = query
        if query is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        symbol, limit = query
        book = self.books.now(symbol, limit)
        if book is None:
            return self.app(environ, start_response)  # the view waits, or says why not
        body = book.binance(limit)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), (HEADER, "0")]
        partial = book.partial(limit)
        if partial:
            headers.append((PARTIAL_HEADER, ",".join(partial)))
        start_response("200 OK", headers)
        self._count.inc()  # as metrics.observe does, its labelled children kept
        self._latency.observe(time.perf_counter() - started)
        return [body]


def _plain_query(raw: str) -> tuple[str, int] | None:
    """(symbol, limit) of a plain order book query, or None for anything the view should judge."""
    if len(raw) > MAX_QUERY or not raw.isascii():
        return None
    pairs = parse_qsl(raw, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= PARAMS:
        return None
    try:
        symbol = normalize_symbol(params.get("symbol", ""))
    except InvalidSymbol:
        return None
    limit = whole_number(params["limit"]) if "limit" in params else DEFAULT_LIMIT
    if limit is None or limit < 1:
        return None
    return symbol, clamp(limit)
