"""Candles: ``GET /api/v3/klines`` and ``/api/v3/uiKlines``, from the kept candles and the stream.

Binance's parameters (symbol, interval, startTime, endTime, limit up to 1,000, timeZone) and rows.
Closed candles are history and are served whatever the stream's state; an answer that reaches the
current candle is served only while its stream is vouched for. A range that is not all kept (older
than the kept candles, or across a hole not yet fetched) is waited for up to DEMAND_WAIT_MS while
the messenger fetches it, then 503 -1001 with Retry-After: never an answer with a hole in it.

``uiKlines`` answers as ``klines``: Binance documents the same parameters and rows.
``timeZone`` is served where it does not move the interval's windows (UTC, or an offset that is a
whole number of intervals, e.g. ``+08:00`` for ``1h``); otherwise a 400 says so.
"""

from __future__ import annotations

import re
import time

from flask import Response, current_app, request

from contract import kinds
from contract.backfill import Backfill
from contract.klines import backfill_series
from server.binance.common import BinanceError, bp, limit_param, long_param, records, required_symbol
from server.candles import INTERVAL_MS, CandleStore, Kept, Missing, answer
from server.errors import STORE_DOWN, store_down
from server.store import StoreUnavailable
from server.views import settings

KLINES_DEFAULT, KLINES_MAX = 500, 1000
POLL_S = 0.05
_TIME_ZONE = re.compile(r"([+-]?)(\d{1,2})(?::(\d{2}))?")
# Intervals whose windows a time zone can move (Binance counts days, weeks and months in it).
CALENDAR = frozenset({"1d", "3d", "1w", "1M"})


@bp.get("/klines")
def klines() -> Response:
    """Candles of one symbol and interval, oldest first."""
    return _candles()


@bp.get("/uiKlines")
def ui_klines() -> Response:
    """As ``klines``."""
    return _candles()


def _candles() -> Response:
    symbol = required_symbol()
    interval = request.args.get("interval")
    if not interval:
        raise BinanceError(
            400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
        )
    if interval not in kinds.KLINE_INTERVALS:
        raise BinanceError(400, -1120, "Invalid interval.")
    start, end = long_param("startTime"), long_param("endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(400, -1023, "Start time is greater than end time.")
    limit = limit_param(KLINES_DEFAULT, lambda n: 1 <= n <= KLINES_MAX, f"Up to {KLINES_MAX}.")
    _time_zone(interval)
    rows = _rows(symbol, interval, start, end, limit)
    return Response(b"[" + b",".join(rows) + b"]", mimetype="application/json")


def _rows(symbol: str, interval: str, start: int | None, end: int | None, limit: int) -> list[bytes]:
    """The rows, once they can be answered exactly; waits up to DEMAND_WAIT_MS for what is missing."""
    candles = _store()
    wait_s = settings().demand_wait_ms / 1000
    deadline = time.monotonic() + wait_s
    asked: int | None = None
    streamed = False
    try:
        while True:
            kept: Kept = candles.read(interval, symbol, start, end, limit)
            try:
                return answer(kept, interval, start, end, limit)
            except Missing as missing:
                if missing.reach is not None and asked is not None:  # too old to keep in line?
                    if missing.up_to:
                        page = candles.page_to(interval, symbol, missing.reach, limit)
                    else:
                        page = None if start is None else candles.page(interval, symbol, start, end, limit)
                    if page is not None:
                        return page
                if missing.needs_stream and not streamed:
                    # Not streamed yet (started on demand, as every kind), or not current (503).
                    records(f"kline_{interval}", [symbol])
                    streamed = True
                    continue
                if missing.reach is not None and (asked is None or missing.reach < asked):
                    if not streamed and kept.current is None:
                        records(f"kline_{interval}", [symbol])  # an unknown symbol is a 400 here
                        streamed = True
                    candles.ask_backfill(
                        Backfill(backfill_series(interval, missing.up_to), symbol, missing.reach)
                    )
                    asked = missing.reach
                if time.monotonic() >= deadline:
                    why = f"Candles of {symbol} {interval}: {missing}; try again shortly."
                    raise BinanceError(503, -1001, why) from None
            time.sleep(POLL_S)
    except StoreUnavailable as exc:
        store_down(request.path, exc)
        raise BinanceError(503, -1001, f"Market data unavailable: {STORE_DOWN}") from None


def _time_zone(interval: str) -> None:
    """Accept ``timeZone`` where it leaves the windows as UTC's; else a clear 400."""
    raw = request.args.get("timeZone")
    if raw is None or raw == "":
        return
    match = _TIME_ZONE.fullmatch(raw)
    hours = int(match.group(2)) if match else 99
    minutes = int(match.group(3) or 0) if match else 99
    offset_min = (hours * 60 + minutes) * (-1 if match and match.group(1) == "-" else 1)
    if match is None or minutes >= 60 or not -12 * 60 <= offset_min <= 14 * 60:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter 'timeZone': {raw[:20]!r}.")
    if offset_min == 0:
        return
    if interval in CALENDAR or (offset_min * 60_000) % INTERVAL_MS[interval] != 0:
        raise BinanceError(
            400,
            -1100,
            f"timeZone {raw} moves the windows of {interval} candles, which Transmute keeps in UTC only; "
            "ask without timeZone (UTC), or for an interval whose windows it does not move.",
        )


def _store() -> CandleStore:
    candles: CandleStore = current_app.extensions["transmute.candles"]
    return candles
