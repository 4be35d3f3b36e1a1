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

from contract.backfill import BACKFILL_CHANNEL, BACKFILL_KEY, Backfill
from contract.keys import DEMAND_KEY, snapshot_key
from contract.klines import READ_SCRIPT, klines_key, origin_key, row_from_record, row_times
from contract.records import MalformedRecord
from contract.servable import servable
from server.store import SnapshotStore, StoreUnavailable

# Longest window of each interval (a calendar month is at most 31 days): how far back a backfill
# must reach for a number of candles, erring on reaching further.
INTERVAL_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000, "1M": 2_678_400_000,
}  # fmt: skip


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

    def ask_backfill(self, request: Backfill) -> None:
        """Ask the messenger to reach a series back (concurrent asks for the same reach share one)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(BACKFILL_KEY, {request.member(): int(time.time() * 1000)}, nx=True)
            pipe.publish(BACKFILL_CHANNEL, request.member())
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc


def _now_ms() -> int:
    return int(time.time() * 1000)
