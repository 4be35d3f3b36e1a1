"""Kept candles from Redis (contract.klines): a range and what bounds it, in one round trip.

``answer`` decides, from what one read returned, whether a request can be answered exactly and
with what; when it cannot, it says what is missing: older candles (ask the messenger for a
backfill), the stream's open candle (not vouched for, or not streamed yet), or a hole between the
kept candles and the open one (being fetched). Nothing here ever fills a gap by guessing.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from contract import backfill
from contract.backfill import Backfill
from contract.keys import DEMAND_KEY, snapshot_key
from contract.klines import (
    BOUNDS_SCRIPT,
    LONGEST_MS,
    PAGE_ROWS,
    page_key,
    page_to_key,
    row_from_record,
    row_times,
    write_keys,
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

    def __init__(
        self, why: str, reach: int | None = None, needs_stream: bool = False, up_to: bool = False
    ) -> None:
        super().__init__(why)
        self.reach = reach
        self.needs_stream = needs_stream
        self.up_to = up_to  # ``reach`` is an end: the candles up to it are needed


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
            if end is not None:  # the candles up to an end
                raise Missing("older candles are being fetched", reach=end, up_to=True)
            reach = max(0, before - (limit - len(rows)) * INTERVAL_MS[interval])
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


# Rows a worker keeps copies of, in all (about 200 bytes each): the sets read most recently.
COPIED_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class _Copy:
    """A kept set as of one write count: its rows (oldest first) and their open times."""

    generation: Any
    opens: list[int]
    members: list[bytes]

    def select(self, start: int | None, end: int | None, limit: int) -> list[bytes]:
        """The rows a read of the set would return: the first ``limit`` from ``start``, or the last
        ``limit`` up to ``end``, opening within [start, end]."""
        high = len(self.opens) if end is None else bisect.bisect_right(self.opens, end)
        if start is not None:
            low = bisect.bisect_left(self.opens, start)
            return self.members[low : min(high, low + limit)]
        return self.members[max(0, high - limit) : high]


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)


class CandleStore:
    """Reads kept candles; asks the messenger for older ones.

    Each worker keeps a copy of the sets it serves, tagged with their write count: a request reads
    the bounds, the write count and the open candle (one small script, one round trip) and takes
    its rows from the copy while the count is the same, so 1,000 rows do not cross from Redis on
    every request. A new count (a candle closed, a gap filled) reads the set again, with its
    bounds, in one transaction.
    """

    def __init__(self, client: redis.Redis, store: SnapshotStore) -> None:
        self.client = client
        self.store = store
        self._bounds_sha = _sha(BOUNDS_SCRIPT)
        self._copies: OrderedDict[tuple[str, str], _Copy] = OrderedDict()
        self._copied_rows = 0
        self._lock = threading.Lock()

    def read(self, interval: str, symbol: str, start: int | None, end: int | None, limit: int) -> Kept:
        """The kept rows of the range and its bounds (demand counted now and then)."""
        kind = f"kline_{interval}"
        keys = [*write_keys(interval, symbol), snapshot_key(kind, symbol)]
        series = (interval, symbol)
        try:
            due = self.store.due(kind, [symbol])

            def bounds_and_demand(pipe: Any) -> None:
                pipe.evalsha(self._bounds_sha, len(keys), *keys)
                if due:
                    pipe.zadd(DEMAND_KEY, dict.fromkeys(due, int(time.time() * 1000)), xx=True)

            def rows_and_bounds(pipe: Any) -> None:
                pipe.zrange(keys[0], 0, -1)
                pipe.evalsha(self._bounds_sha, len(keys), *keys)

            bounds = self._run(bounds_and_demand, transaction=False)[0]
            with self._lock:
                copy = self._copies.get(series)
                if copy is not None:
                    self._copies.move_to_end(series)
            if copy is None or bounds[4] is None or copy.generation != bounds[4]:
                # The rows and their bounds at one instant (a transaction).
                members, bounds = self._run(rows_and_bounds, transaction=True)
                copy = _Copy(bounds[4], [row_times(m)[0] for m in members], members)
                self._keep(series, copy)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        first, last, _count, origin, _generation, raw, heard = bounds
        try:
            current = servable(raw, heard)
        except MalformedRecord:
            current = None
        return Kept(
            copy.select(start, end, limit),
            row_times(first) if first else None,
            row_times(last) if last else None,
            bool(origin),
            current,
        )

    def _run(self, build: Callable[[Any], None], transaction: bool) -> list[Any]:
        """One round trip of the commands ``build`` queues; the script is loaded once if Redis does
        not know it (after a restart or a flush), and the commands sent again."""
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=transaction)
            build(pipe)
            try:
                result: list[Any] = pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.client.script_load(BOUNDS_SCRIPT)
                continue
            return result
        raise AssertionError("unreachable")

    def _keep(self, series: tuple[str, str], copy: _Copy) -> None:
        """Keep a copy, dropping the least recently read ones past COPIED_ROWS in all."""
        if len(copy.members) > COPIED_ROWS:
            return
        with self._lock:
            old = self._copies.pop(series, None)
            self._copied_rows += len(copy.members) - (len(old.members) if old else 0)
            self._copies[series] = copy
            while self._copied_rows > COPIED_ROWS:
                _, dropped = self._copies.popitem(last=False)
                self._copied_rows -= len(dropped.members)

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

    def page_to(self, interval: str, symbol: str, end: int, limit: int) -> list[bytes] | None:
        """The answer from an older page fetched up to ``end``, if there is one and it is enough."""
        try:
            raw = self.client.get(page_to_key(interval, symbol, end))
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if raw is None:
            return None
        rows = [orjson.dumps(r) for r in orjson.loads(raw)]
        chosen = [r for r in rows if row_times(r)[0] <= end]
        # A page short of PAGE_ROWS reached the symbol's first candle: it holds all there is.
        return chosen[-limit:] if len(chosen) >= limit or len(rows) < PAGE_ROWS else None

    def ask_backfill(self, request: Backfill) -> None:
        """Ask the messenger for a backfill (concurrent asks for the same one are one request)."""
        try:
            backfill.ask(self.client, request)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc


def _now_ms() -> int:
    return int(time.time() * 1000)
