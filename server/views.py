"""``POST /snapshot/<SYMBOL>``: the latest best bid/ask of a symbol, or why there is none."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, current_app, request

from contract.keys import LIVE
from contract.settings import Settings
from contract.symbols import InvalidSymbol, normalize_symbol
from server.errors import ApiError
from server.store import SnapshotStore, StoreUnavailable

bp = Blueprint("snapshot", __name__)

# Every method reaches the view, so that each gets the contract's JSON 400, not a 405.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
BOOK_TICKER = "bookticker"
TRADING = "TRADING"
RETRY = {"Retry-After": "1"}


def store() -> SnapshotStore:
    """This app's store (made by the factory)."""
    snapshots: SnapshotStore = current_app.extensions["transmute.store"]
    return snapshots


def settings() -> Settings:
    """This app's settings."""
    config: Settings = current_app.extensions["transmute.settings"]
    return config


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


def current(kind: str, symbol: str, max_age_ms: int | None) -> dict[str, Any]:
    """The current record of a stream; streams it on demand if nobody did yet.

    No value: an unknown symbol is a 404 (with the closest listed one), a listed one that does
    not trade a 409, a streamed one whose value is not current the stale 500. A trading symbol
    nobody streams yet is asked for, and the request waits up to DEMAND_WAIT_MS for its first
    value (503 with Retry-After if it does not come).
    """
    snapshots = store()
    try:
        record = snapshots.snapshot(kind, symbol)
        if record is not None:
            return fresh(record, symbol, max_age_ms)
        found = snapshots.lookup(kind, symbol)
        if not found.catalog_loaded:
            raise ApiError(503, "The symbol list is not loaded yet; try again shortly.", RETRY)
        if found.status is None:
            close = snapshots.suggest(symbol)
            hint = f" Did you mean {close}?" if close else ""
            raise ApiError(404, f"Unknown symbol {symbol}.{hint}")
        if found.status != TRADING:
            raise ApiError(409, f"{symbol} is not trading (status {found.status}).")
        if found.stream_state == LIVE:
            return fresh(None, symbol, max_age_ms)
        if found.stream_state is None:
            snapshots.demand(kind, symbol)
        record = snapshots.wait(kind, symbol, settings().demand_wait_ms / 1000)
    except StoreUnavailable:
        raise ApiError(503, "Data store unavailable; try again shortly.", RETRY) from None
    if record is None:
        raise ApiError(503, f"{symbol} is being subscribed; try again in a moment.", RETRY)
    return fresh(record, symbol, max_age_ms)


@bp.route("/snapshot/<symbol>", methods=METHODS, provide_automatic_options=False)
def snapshot(symbol: str) -> dict[str, Any]:
    """The latest bookTicker of ``symbol`` (BTC_USDT, BTCUSDT, btc_usdt or btcusdt)."""
    if request.method != "POST":
        raise ApiError(400, f"{request.method} not supported.")
    exchange_symbol = parse_symbol(symbol)
    return current(BOOK_TICKER, exchange_symbol, parse_max_age_ms())
