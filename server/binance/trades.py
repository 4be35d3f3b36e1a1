"""Trades: recent trades, older trades by id, aggregate trades by id or time; oldest first.

All three are read from the kept lists (contract.trade_history, server.trade_history): the most
recent items only while their stream is vouched for; a range wholly in the past, every id of it
held, whatever the connection's state. A range older than what Redis holds is asked of the
messenger (contract.backfill) and waited for up to DEMAND_WAIT_MS, else 503 -1001 with
Retry-After. The server never calls Binance.

Binance's rules (``GET /api/v3/aggTrades``): ``fromId`` returns the aggregate trades from that id
on; ``startTime`` and/or ``endTime`` filter by trade time (inclusive): with a start, the first
``limit`` from it, with only an end, the last ``limit`` up to it; ``fromId`` with either time is
-1128; none of them, the most recent. ``limit`` is 1 to 1,000 (default 500).
"""

from __future__ import annotations

import time

from flask import Response, current_app, request

from contract import kinds
from contract.backfill import Backfill
from contract.trade_history import AGG_TRADE, TRADE
from server.binance.common import BinanceError, bp, limit_param, long_param, records, required_symbol
from server.errors import STORE_DOWN, store_down
from server.store import StoreUnavailable
from server.trade_history import BY_TIME, FETCH, FROM_ID, OK, RECENT, STALE, Answer, Query, TradeHistoryStore
from server.views import settings, store

TRADES_DEFAULT, TRADES_MAX = 500, 1000
EXTENSION = "transmute.trade_history"
POLL_S = 0.02
KIND = {AGG_TRADE: "aggTrade", TRADE: kinds.TRADE}
COMBINATION = (400, -1128, "Combination of optional parameters invalid.")


@bp.get("/trades")
def trades() -> Response:
    """The most recent trades, oldest first."""
    symbol = required_symbol()
    return _serve(TRADE, symbol, Query(RECENT, _limit()))


@bp.get("/historicalTrades")
def historical_trades() -> Response:
    """Trades from ``fromId`` on (default: the most recent), oldest first."""
    symbol = required_symbol()
    limit = _limit()
    from_id = long_param("fromId")
    return _serve(TRADE, symbol, Query(RECENT, limit) if from_id is None else Query(FROM_ID, limit, from_id))


@bp.get("/aggTrades")
def agg_trades() -> Response:
    """Aggregate trades: the most recent, from ``fromId`` on, or by ``startTime``/``endTime``."""
    symbol = required_symbol()
    from_id, start, end = long_param("fromId"), long_param("startTime"), long_param("endTime")
    limit = _limit()
    if from_id is not None and (start is not None or end is not None):
        raise BinanceError(*COMBINATION)
    if start is not None and end is not None and start > end:
        raise BinanceError(400, -1023, "Start time is greater than end time.")
    if from_id is not None:
        query = Query(FROM_ID, limit, from_id)
    elif start is not None or end is not None:
        query = Query(BY_TIME, limit, start_ms=start, end_ms=end)
    else:
        query = Query(RECENT, limit)
    return _serve(AGG_TRADE, symbol, query)


def _limit() -> int:
    return limit_param(TRADES_DEFAULT, lambda n: 1 <= n <= TRADES_MAX, f"Up to {TRADES_MAX}.")


def _serve(series: str, symbol: str, query: Query) -> Response:
    """Read the range; ask for its stream or its older part and wait, up to DEMAND_WAIT_MS."""
    kind = KIND[series]
    wait_s = settings().demand_wait_ms / 1000
    deadline = time.monotonic() + wait_s
    demanded = False
    if query.mode == RECENT:
        records(kind, [symbol])  # the symbol, its stream (asked for if need be), vouched for
        demanded = True
        deadline = time.monotonic() + wait_s
    asked: set[str] = set()
    while True:
        answer = _read(series, symbol, query)
        if answer.status == OK:
            return Response(b"[" + b",".join(answer.items) + b"]", mimetype="application/json")
        if answer.status == STALE and not demanded:
            records(kind, [symbol])  # raises 503 (or 400, 429) if it cannot be vouched for in time
            demanded = True
            deadline = time.monotonic() + wait_s
            continue
        if answer.status == FETCH and answer.fetch is not None and answer.fetch.member() not in asked:
            if not asked:
                _listed(kind, symbol)
            _ask(answer.fetch)
            asked.add(answer.fetch.member())
        if time.monotonic() >= deadline:
            raise BinanceError(503, -1001, _why(answer, symbol), 2 if answer.status == FETCH else 1)
        time.sleep(POLL_S)


def _why(answer: Answer, symbol: str) -> str:
    if answer.status == FETCH:
        return f"Older trades of {symbol} are being fetched; try again shortly."
    if answer.status == STALE:
        return f"Market data unavailable: the trades of {symbol} cannot be vouched for now."
    return f"Recent trades of {symbol} are being fetched; try again shortly."


def _history() -> TradeHistoryStore:
    reader: TradeHistoryStore | None = current_app.extensions.get(EXTENSION)
    if reader is None:
        reader = current_app.extensions[EXTENSION] = TradeHistoryStore(store().client)
    return reader


def _read(series: str, symbol: str, query: Query) -> Answer:
    try:
        return _history().read(series, symbol, query)
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None


def _ask(fetch: Backfill) -> None:
    try:
        _history().ask(fetch)
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None


def _listed(kind: str, symbol: str) -> None:
    """A symbol the exchange lists (trading or not: its history exists), before asking for it."""
    try:
        found = store().lookup(kinds.key_kind(kind), [symbol])[0]
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None
    if not found.catalog_loaded:
        raise BinanceError(503, -1001, "The symbol list is not loaded yet; try again shortly.")
    if found.status is None:
        raise BinanceError(400, -1121, "Invalid symbol.")
