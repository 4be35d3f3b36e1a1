"""``POST /snapshot/<SYMBOL>``: the latest best bid/ask of a symbol, or why there is none."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, current_app, request

from contract.symbols import InvalidSymbol, normalize_symbol
from server.errors import ApiError
from server.store import SnapshotStore, StoreUnavailable

bp = Blueprint("snapshot", __name__)

# Every method reaches the view, so that each gets the contract's JSON 400, not a 405.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
BOOK_TICKER = "bookticker"


def store() -> SnapshotStore:
    """This app's store (made by the factory)."""
    snapshots: SnapshotStore = current_app.extensions["transmute.store"]
    return snapshots


def parse_symbol(raw: str) -> str:
    """The exchange spelling of the path's symbol, or a 400."""
    try:
        return normalize_symbol(raw)
    except InvalidSymbol as exc:
        raise ApiError(400, f"Invalid symbol: {exc}.") from None


def parse_max_age_ms() -> int | None:
    """``max_age_ms`` from the query string or a JSON body; a 400 if it is not a whole number >= 0."""
    value: Any = request.args.get("max_age_ms")
    raw_body = request.get_data(cache=False)
    if raw_body.strip():
        try:
            doc = orjson.loads(raw_body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "Request body must be a JSON object.") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        value = doc.get("max_age_ms", value)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if type(value) is not int or value < 0:
        raise ApiError(400, "max_age_ms must be a whole number of milliseconds, 0 or more.")
    return int(value)


def fresh(record: dict[str, Any] | None, symbol: str, max_age_ms: int | None) -> dict[str, Any]:
    """The record with its ``age_ms``, or the stale error (500) if it cannot be vouched for."""
    if record is None:
        raise ApiError(500, f"No current data for {symbol}: its stream is not live, or it is not streamed.")
    age_ms = max(0, int(time.time() * 1000) - record["as_of"])
    if max_age_ms is not None and age_ms > max_age_ms:
        raise ApiError(
            500, f"{symbol} was last confirmed current {age_ms} ms ago, over max_age_ms={max_age_ms}."
        )
    record["age_ms"] = age_ms
    return record


@bp.route("/snapshot/<symbol>", methods=METHODS, provide_automatic_options=False)
def snapshot(symbol: str) -> dict[str, Any]:
    """The latest bookTicker of ``symbol`` (BTC_USDT, BTCUSDT, btc_usdt or btcusdt)."""
    if request.method != "POST":
        raise ApiError(400, f"{request.method} not supported.")
    exchange_symbol = parse_symbol(symbol)
    max_age_ms = parse_max_age_ms()
    try:
        record = store().snapshot(BOOK_TICKER, exchange_symbol)
    except StoreUnavailable:
        raise ApiError(503, "Data store unavailable; try again shortly.", {"Retry-After": "1"}) from None
    return fresh(record, exchange_symbol, max_age_ms)
