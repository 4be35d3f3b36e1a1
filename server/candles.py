"""Kept candles from Redis (contract.klines): a range and what bounds it, in one round trip.

``answer`` decides, from what one read returned, whether a request can be answered exactly and
with what; when it cannot, it says what is missing: older candles (ask the messenger for a
backfill), the stream's open candle (not vouched for, or not streamed yet), or a hole between the
kept candles and the open one (being fetched). Nothing here ever fills a gap by guessing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from contract import backfill
from contract.backfill import Backfill
from contract.keys import DEMAND_KEY, snapshot_key
from contract.klines import (
    LONGEST_MS,
    READ_SCRIPT,
    klines_key,
    origin_key,
    page_key,
    row_from_record,
    row_times,
)
from contract.records import MalformedRecord
from contract.servable import servable
from server.store import SnapshotStore, StoreUnavailable

INTERVAL_MS = LONGEST_MS  # how far back a backfill must reach for a number of candles: err on further


@dataclass(frozen=True, slots=True)
class Kept:
    """What one read found: the rows in range (oldest first) and what bounds them."""

    rows: list[bytes]
    first: tuple[int, int] | None  # (open, close) of the oldest kept candle
    last: tuple[int, int] | None  # and of the newest
    origin: bool  # nothing exists before the oldest kept candle
    current: dict[str, Any] | None  # the stream's record (the open candle), while vouched for


class Missing(Exception):
    """The request cannot be answered exactly yet; ``reach`` is set when older candles are needed."""

    def __init__(self, why: str, reach: int | None = None, needs_stream: bool = False) -> None:
        super().__init__(why)
        self.reach = reach
        self.needs_stream = needs_stream


def answer(kept: Kept, interval: str, start: int | None, end: int | None, limit: int) -> list[bytes]:
    """The rows Binance would answer, oldest first, or Missing.

    Binance's rules: with ``start``, the first ``limit`` candles opening at or after it (and at or
    before ``end``); without, the last ``limit`` opening at or before ``end`` (or now).
    """
    rows = list(kept.rows)
    if kept.last is None or kept.first is None:
        # Nothing kept: the seed (the last KLINE_HISTORY) comes first; then, if that is not enough,
        # what is still missing is asked for on its own.
        raise Missing("its candles are being fetched", reach=start if start is not None else end or _now_ms())
    if start is not None and start < kept.first[0] and not kept.origin:
        raise Missing("older candles are being fetched", reach=start)
    last_open, last_close = kept.last
    # Does the range go past the newest kept candle? Then it ends at the stream's current one.
    if (start is None or len(rows) < limit) and (end is None or end > last_close):
        current = kept.current
        if current is None:
            raise Missing("its kline stream is not current", needs_stream=True)
        opened = current["open_time"]
        if opened == last_close + 1:
            if (end is None or opened <= end) and (start is None or opened >= start):
                rows.append(orjson.dumps(row_from_record(current)))
        elif opened != last_open:
            raise Missing("candles missed by the stream are being fetched")
    if start is None:
        if len(rows) < limit and not kept.origin:
            before = kept.first[0] if end is None else min(kept.first[0], end + 1)
            reach = before - (limit - len(rows)) * INTERVAL_MS[interval]
            raise Missing("older candles are being fetched", reach=reach)
        rows = rows[-limit:]
    return rows[:limit]


def from_page(rows: list[bytes], start: int, end: int | None, limit: int) -> list[bytes] | None:
    """The first ``limit`` of a page's rows opening in [start, end], if the page holds them all: it
    holds every closed candle from ``start`` on, up to its last."""
    times = [row_times(r) for r in rows]
    chosen = [
        r
        for r, (opened, _) in zip(rows, times, strict=True)
        if opened >= start and (end is None or opened <= end)
    ]
    if len(chosen) >= limit or (end is not None and times and times[-1][1] >= end):
        return chosen[:limit]
    return None


class CandleStore:
    """Reads kept candles; asks the messenger for older ones."""

    def __init__(self, client: redis.Redis, store: SnapshotStore) -> None:
        self.client = client
        self.store = store
        self._read = client.register_script(READ_SCRIPT)

    def read(self, interval: str, symbol: str, start: int | None, end: int | None, limit: int) -> Kept:
        """The kept rows of the range and its bounds, in one round trip (demand counted now and then)."""
        kind = f"kline_{interval}"
        args: list[str | int]
        if start is not None:
            args = ["asc", start, "+inf" if end is None else end, limit]
        else:
            args = ["desc", "-inf", "+inf" if end is None else end, limit]
        keys = [klines_key(interval, symbol), origin_key(interval, symbol), snapshot_key(kind, symbol)]
        try:
            due = self.store.due(kind, [symbol])
            pipe = self.client.pipeline(transaction=False)
            self._read(keys=keys, args=args, client=pipe)
            if due:
                pipe.zadd(DEMAND_KEY, dict.fromkeys(due, int(time.time() * 1000)), xx=True)
            rows, first, last, origin, raw, heard = pipe.execute()[0]
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if start is None:
            rows.reverse()
        try:
            current = servable(raw, heard)
        except MalformedRecord:
            current = None
        return Kept(
            rows,
            row_times(first) if first else None,
            row_times(last) if last else None,
            bool(origin),
            current,
        )

    def page(self, interval: str, symbol: str, start: int, end: int | None, limit: int) -> list[bytes] | None:
        """The answer from an older page fetched from ``start``, if there is one and it is enough."""
        try:
            raw = self.client.get(page_key(interval, symbol, start))
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if raw is None:
            return None
        rows = [orjson.dumps(r) for r in orjson.loads(raw)]
        return from_page(rows, start, end, limit)

    def ask_backfill(self, request: Backfill) -> None:
        """Ask the messenger for a backfill (concurrent asks for the same one are one request)."""
        try:
            backfill.ask(self.client, request)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc


def _now_ms() -> int:
    return int(time.time() * 1000)
