"""What every Binance-shaped endpoint shares: the blueprint, Binance's errors, its parameters,
and the current records of a kind (served only while vouched for, else 503 -1001).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from flask import Blueprint, Response, request

from contract import kinds
from contract.symbols import InvalidSymbol, normalize_symbol
from server import admission, lookup, metrics
from server.errors import STORE_DOWN, store_down
from server.params import MAX_DIGITS, whole_number
from server.store import StoreUnavailable
from server.views import MAX_SYMBOLS, settings, store

bp = Blueprint("binance", __name__, url_prefix="/api/v3")


class BinanceError(Exception):
    """An error in Binance's shape: HTTP status, Binance's code and message."""

    def __init__(self, status: int, code: int, msg: str, retry_after_s: int = 1) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg
        self.retry_after_s = retry_after_s


INVALID_SYMBOL = (400, -1121, "Invalid symbol.")
# ``symbols`` as the document gives it (^\[.+\]$): a JSON list from its first character to its last,
# on one line. orjson.loads alone also takes whitespace around it, and newlines within it.
SYMBOLS_TEXT = re.compile(r"\[.+\]")


def json_body(doc: Any) -> Response:
    return Response(orjson.dumps(doc), mimetype="application/json")


@bp.errorhandler(BinanceError)
def binance_error(exc: BinanceError) -> Response:
    """Binance's error body."""
    response = json_body({"code": exc.code, "msg": exc.msg})
    response.status_code = exc.status
    if exc.status in (429, 503):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def parse_symbol(raw: str) -> str:
    try:
        return normalize_symbol(raw)
    except InvalidSymbol:
        raise BinanceError(*INVALID_SYMBOL) from None


def symbols_param() -> list[str] | None:
    """``symbol`` or ``symbols`` (a JSON list); None when neither is given."""
    one, many = request.args.get("symbol"), request.args.get("symbols")
    if one is not None and many is not None:
        raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
    if one is not None:
        return [parse_symbol(one)]
    if many is None:
        return None
    try:
        names = orjson.loads(many) if SYMBOLS_TEXT.fullmatch(many) else None
    except orjson.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.")
    return list(dict.fromkeys(parse_symbol(n) for n in names))


def required_symbol() -> str:
    raw = request.args.get("symbol")
    if not raw:
        raise BinanceError(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    return parse_symbol(raw)


def long_param(name: str) -> int | None:
    """An optional whole-number parameter (an id, a time in ms): -1100 unless 1 to 20 ASCII digits."""
    raw = request.args.get(name)
    if raw is None:
        return None
    value = whole_number(raw)
    if value is None:
        legal = f"'^[0-9]{{1,{MAX_DIGITS}}}$'"
        raise BinanceError(
            400, -1100, f"Illegal characters found in parameter '{name}'; legal range is {legal}."
        )
    return value


def limit_param(default: int, allowed: Callable[[int], bool], hint: str) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    value = whole_number(raw)
    if value is None:
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter 'limit'; legal range is '^[0-9]{{1,{MAX_DIGITS}}}$'.",
        )
    if not allowed(value):
        raise BinanceError(400, -1130, f"Data sent for parameter 'limit' is not valid. {hint}")
    return value


def records(kind: str, symbols: list[str] | None) -> list[dict[str, Any]]:
    """The current records of a kind for these symbols, or for every symbol streamed in it."""
    key_kind = kinds.key_kind(kind)
    if symbols is not None and len(symbols) > MAX_SYMBOLS:  # each may start a stream, as in /snapshots
        raise BinanceError(400, -1101, f"Too many values for parameter 'symbols'; at most {MAX_SYMBOLS}.")
    with binance_errors():
        if symbols is None:
            streamed = store().streamed(key_kind)
            # Listing everything streamed is no one's use of each symbol: it keeps none streamed.
            found = store().snapshots(key_kind, streamed, touch=False) if streamed else []
            return [
                lookup.with_age(r, s, None) for s, r in zip(streamed, found, strict=True) if r is not None
            ]
        return lookup.current(store(), key_kind, symbols, None, settings().demand_wait_ms / 1000)


@contextmanager
def binance_errors() -> Iterator[None]:
    """Why there is no current value, as Binance's errors (503 -1001 with Retry-After, ...)."""
    try:
        yield
    except lookup.UnknownSymbol:
        raise BinanceError(*INVALID_SYMBOL) from None
    except lookup.Stale as exc:
        metrics.STALE.labels("binance").inc()
        raise BinanceError(503, -1001, f"Market data unavailable: {exc}") from None
    except lookup.NoValue as exc:
        raise BinanceError(503, -1001, f"Market data unavailable: {exc}") from None
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None
    except admission.Refused as exc:
        raise BinanceError(429, -1003, str(exc), exc.retry_after_s) from None


def one_or_many(symbols: list[str] | None, docs: list[dict[str, Any]]) -> Response:
    """An object for ``symbol=``, a list otherwise, as Binance answers."""
    if symbols is not None and "symbol" in request.args:
        return json_body(docs[0])
    return json_body(docs)
