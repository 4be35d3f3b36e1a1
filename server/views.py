"""Transmute's own API: the current value of a symbol's stream, or of several symbols at once.

- ``POST /snapshot/<SYMBOL>``: the best bid/ask (bookTicker).
- ``POST /snapshot/<SYMBOL>/<kind>``: any stream kind (``trade``, ``kline_1m``, ``depth5``, ...).
- ``POST /snapshots``: several symbols of one kind, read at one instant.

Errors are ``{"status_code": N, "error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from contract import kinds
from contract.settings import Settings
from contract.symbols import InvalidSymbol, normalize_symbol
from server import admission, lookup, metrics
from server.books import DEFAULT_LIMIT, MAX_LIMIT, PARTIAL_HEADER, Book, BookReader
from server.errors import ApiError
from server.params import MAX_DIGITS, whole_number
from server.store import SnapshotStore

bp = Blueprint("snapshot", __name__)

# Every method reaches the views, so that each gets the contract's JSON 400, not a 405.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
MAX_SYMBOLS = 100
RETRY = {"Retry-After": "1"}
MAX_AGE_ERROR = (
    f"max_age_ms must be a whole number of milliseconds, 0 or more, of at most {MAX_DIGITS} digits."
)
LIMIT_ERROR = f"limit must be a whole number of levels from 1 to {MAX_LIMIT}."


def store() -> SnapshotStore:
    """This app's store (made by the factory)."""
    snapshots: SnapshotStore = current_app.extensions["transmute.store"]
    return snapshots


def books() -> BookReader:
    """This app's reader of order books (made by the factory)."""
    reader: BookReader = current_app.extensions["transmute.books"]
    return reader


def settings() -> Settings:
    """This app's settings."""
    config: Settings = current_app.extensions["transmute.settings"]
    return config


def parse_symbol(raw: str) -> str:
    """The exchange spelling of a user's symbol, or a 400."""
    try:
        return normalize_symbol(raw)
    except InvalidSymbol as exc:
        raise ApiError(400, f"Invalid symbol: {exc}.") from None


def parse_kind(raw: str) -> str:
    """Binance's name of a kind (any case but a kline's interval), or a 404."""
    kind = kinds.resolve_kind(raw)
    if kind is None:
        raise ApiError(404, f"Unknown stream kind {raw[:40]!r}; kinds: {', '.join(kinds.KINDS)}.")
    return kind


@dataclass(frozen=True, slots=True)
class Given:
    """A request's parameters: the query's (text) and a JSON object body's (JSON values).

    Where both give one, the body's value is used, and each must be valid: a malformed value is
    the parameter's 400 wherever it is, never hidden by a good one in the other place.
    """

    query: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str, default: Any = None) -> Any:
        """The value used: the body's if it has one, else the query's, else ``default``."""
        return self.body.get(name, self.query.get(name, default))


def params() -> Given:
    """The query's parameters and a JSON object body's (a 400 if the body is not one)."""
    query: dict[str, str] = dict(request.args)
    raw_body = request.get_data(cache=False)
    if not raw_body.strip():
        return Given(query)
    try:
        doc = orjson.loads(raw_body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Request body must be a JSON object.") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    return Given(query, doc)


def parse_max_age_ms(given: Given) -> int | None:
    """``max_age_ms`` if given: 1 to 20 ASCII digits in the query, a JSON integer in the body, >= 0."""
    max_age_ms: int | None = whole_param(given, "max_age_ms", lambda v: v >= 0, MAX_AGE_ERROR, None)
    return max_age_ms


def parse_limit(given: Given) -> int:
    """``limit`` of an order book (default 100): 1 to 20 ASCII digits in the query, a JSON integer in
    the body, 1 to 5,000."""
    limit: int = whole_param(given, "limit", lambda v: 1 <= v <= MAX_LIMIT, LIMIT_ERROR, DEFAULT_LIMIT)
    return limit


def whole_param(given: Given, name: str, allowed: Callable[[int], bool], error: str, default: Any) -> Any:
    """A whole-number parameter, each value given checked (a 400 if either is bad), the body's used.

    In the query it is text, 1 to 20 ASCII digits; in the body a JSON integer, as the document types
    it (``"500"`` or ``true`` there is a 400, not a number).
    """
    found = default
    if name in given.query:
        found = whole_number(given.query[name])
        if found is None or not allowed(found):
            raise ApiError(400, error)
    if name in given.body:
        found = given.body[name]
        if type(found) is not int or not allowed(found):
            raise ApiError(400, error)
    return found


def current(kind: str, symbols: list[str], max_age_ms: int | None) -> list[dict[str, Any]]:
    """The current records, or our JSON error for why not."""
    with our_errors():
        return lookup.current(
            store(), kinds.key_kind(kind), symbols, max_age_ms, settings().demand_wait_ms / 1000
        )


def current_books(symbols: list[str], limit: int, max_age_ms: int | None) -> list[Book]:
    """The current order books, deep enough for ``limit`` levels, or our JSON error for why not."""
    with our_errors():
        return books().books(symbols, limit, max_age_ms)


@contextmanager
def our_errors() -> Iterator[None]:
    """Why there is no current value, as this API's errors."""
    try:
        yield
    except lookup.UnknownSymbol as exc:
        raise ApiError(404, str(exc)) from None
    except lookup.NotTrading as exc:
        raise ApiError(409, str(exc)) from None
    except lookup.Stale as exc:
        metrics.STALE.labels("snapshot").inc()
        raise ApiError(500, str(exc)) from None
    except lookup.Unavailable as exc:
        raise ApiError(503, str(exc), RETRY) from None
    except admission.Refused as exc:
        raise ApiError(429, str(exc), exc.headers) from None


def _post_only() -> None:
    if request.method != "POST":
        raise ApiError(400, f"{request.method} not supported.")


@bp.route("/snapshot/<symbol>", methods=METHODS, provide_automatic_options=False)
@bp.route("/snapshot/<symbol>/<kind>", methods=METHODS, provide_automatic_options=False)
def snapshot(symbol: str, kind: str = kinds.BOOK_TICKER) -> dict[str, Any] | Response:
    """The latest value of one stream of ``symbol`` (BTC_USDT, BTCUSDT, btc_usdt or btcusdt)."""
    _post_only()
    exchange_symbol = parse_symbol(symbol)
    name = parse_kind(kind)
    given = params()
    limit = parse_limit(given)  # checked for every kind, as the document types it; it shapes only books
    if name == kinds.DEPTH:
        [book] = current_books([exchange_symbol], limit, parse_max_age_ms(given))
        return book_answer(orjson.dumps(book.record(limit)), book.partial(limit))
    [record] = current(name, [exchange_symbol], parse_max_age_ms(given))
    return record


@bp.route("/snapshots", methods=METHODS, provide_automatic_options=False)
def snapshots() -> dict[str, Any] | Response:
    """Several symbols of one kind, read at one instant: ``{"symbols": [...], "kind": "..."}``."""
    _post_only()
    given = params()
    # A JSON list in the body, comma-separated text in the query (as the document gives them).
    if "symbols" in given.body:
        raw = given.body["symbols"]
    else:
        raw = [s for s in given.query.get("symbols", "").split(",") if s]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise ApiError(400, "symbols must be a list of symbols (or, in the query, comma-separated).")
    if len(raw) > MAX_SYMBOLS:
        raise ApiError(400, f"At most {MAX_SYMBOLS} symbols a request.")
    symbols = list(dict.fromkeys(parse_symbol(s) for s in raw))
    kind_given = given.value("kind", kinds.BOOK_TICKER)
    name = parse_kind(kind_given if isinstance(kind_given, str) else "")
    limit = parse_limit(given)  # checked for every kind, as the document types it; it shapes only books
    if name == kinds.DEPTH:
        found = current_books(symbols, limit, parse_max_age_ms(given))
        doc = {"kind": name, "snapshots": [b.record(limit) for b in found]}
        return book_answer(orjson.dumps(doc), tuple(sorted({p for b in found for p in b.partial(limit)})))
    records = current(name, symbols, parse_max_age_ms(given))
    return {"kind": name, "snapshots": records}


def book_answer(body: bytes, partial: tuple[str, ...]) -> Response:
    """An order book answer, with the sides that stop short of ``limit`` in PARTIAL_HEADER."""
    response = Response(body, mimetype="application/json")
    if partial:
        response.headers[PARTIAL_HEADER] = ",".join(partial)
    return response
