"""Keeps every carried kline stream's closed candles in Redis: seeded, appended, gaps refetched.

A series (symbol, interval) is followed while its kline stream is carried. Once that stream is
live (the exchange confirmed it: ``streaming``), and not before, it is seeded over REST with the
last KLINE_HISTORY candles, so every candle that closes after the seed comes on the stream (seeded
before, a candle closing before the subscription took hold was never streamed to us and cost one
more call to fill; CI caught it) (one call per 1,000, weight 2 each); if Redis
already keeps some (a restart, a stream carried again), only what is missing since the last kept
candle is fetched, or the series is seeded afresh when more than KLINE_HISTORY were missed. Then
each closed candle (``"x": true``) from the stream is appended. A frame whose candle does not
follow the last kept one (a reconnect, a missed close) makes the series fetch just the gap.

Every write goes through contract.klines.WRITE_SCRIPT, which refuses anything that would leave a
hole, so the set in Redis is contiguous whatever the order of events here. A refusal only means
"fetch what is missing first". Older ranges are fetched when the server asks (contract.backfill):
one call per 1,000 candles, kept up to KLINE_HISTORY_MAX.

The reader threads only hand frames over (``frame``); REST calls and writes run on this worker's
thread. REST is paced by messenger.rest (weight budget, 429/418): a series that could not be
fetched is tried again later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import orjson
import redis

from contract.backfill import Backfill
from contract.klines import (
    HISTORY_TTL_MS,
    LONGEST_MS,
    PAGE_ROWS,
    PAGE_TTL_MS,
    SHORTEST_MS,
    WRITE_SCRIPT,
    encode_row,
    klines_key,
    page_key,
    page_to_key,
    row_from_record,
    row_times,
    write_keys,
)
from contract.redis_client import queue_script
from messenger.backoff import Backoff
from messenger.binance import Fields
from messenger.rest import BinanceRest, RateLimited, RestError
from messenger.worker import Worker

logger = logging.getLogger(__name__)

PAGE = 1000  # Binance's most candles a call
KLINES_PATH = "/api/v3/klines"
Series = tuple[str, str]  # (SYMBOL, interval)
RETRY_S = 1.0
# Series synced before closed candles are appended again: a thousand new series at once do not
# hold up the candles of the ones already kept.
SYNCS_PER_ROUND = 10


class KlineHistory(Worker):
    """The kept candles of every followed series."""

    def __init__(self, client: redis.Redis, rest: BinanceRest, keep: int, cap: int) -> None:
        super().__init__("kline-history")
        self.client = client
        self.rest = rest
        self.keep = keep
        self.cap = max(cap, keep)
        self._write = client.register_script(WRITE_SCRIPT)
        self._followed: set[Series] = set()
        # The open time the next candle of each synced series must have (last kept close + 1).
        self._next_open: dict[Series, int] = {}
        self._closed: deque[tuple[Series, list[Any]]] = deque()
        self._to_sync: dict[Series, None] = {}
        # Series whose stream the exchange has confirmed, and followed ones still waiting for that.
        self._live: set[Series] = set()
        self._waiting: set[Series] = set()
        # The open time of the frame that looked like a gap: no gap after all if the closed
        # candles that were on their way meanwhile bring the next open there.
        self._seen_open: dict[Series, int] = {}
        self._rest_paused_until = 0.0  # monotonic: Binance (or our budget) said to wait
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._backoff = Backoff(0.5, 30.0)
        self.appended = 0
        self.fetched = 0  # candles fetched over REST
        self.calls = 0  # REST calls made
        self.refused = 0  # writes the script refused (each followed by a fetch)
        self.failures = 0

    # -- from other threads -------------------------------------------------------------

    def follow(self, series: set[Series]) -> None:
        """The series carried now: new ones are synced once their stream is live (at once if it
        already is); the others are no longer appended to."""
        with self._lock:
            new = series - self._followed
            self._followed = set(series)
            for gone in [s for s in self._next_open if s not in series]:
                del self._next_open[gone]
            # A confirmation may come before the follow() of the plan that added its stream: kept.
            self._live &= series
            self._waiting &= series
            due = new & self._live
            self._waiting |= new - due
            for s in due:
                self._to_sync[s] = None
        if due:
            self._wake.set()

    def streaming(self, symbol: str, interval: str) -> None:
        """The exchange streams this series' klines to us from now on (a subscription confirmed, or
        a connection opened with it in the URL): a series waiting for that is synced now."""
        series = (symbol, interval)
        with self._lock:
            self._live.add(series)
            if series not in self._waiting:
                return
            self._waiting.discard(series)
            self._to_sync[series] = None
        self._wake.set()

    def frame(self, symbol: str, fields: Fields) -> None:
        """A kline frame arrived (on a reader thread): keep a closed candle, notice a gap.

        Costs a dict lookup for an open candle that follows the kept ones, so it can run per frame.
        """
        series = (symbol, fields["interval"])
        if fields["closed"]:
            if self._next_open.get(series) == fields["open_time"]:  # the next frame opens after it
                with self._lock:  # once a candle: every change of _next_open is made under the lock
                    if self._next_open.get(series) == fields["open_time"]:
                        self._next_open[series] = fields["close_time"] + 1
            self._closed.append((series, row_from_record(fields)))
            self._wake.set()
        elif self._next_open.get(series, fields["open_time"]) != fields["open_time"]:
            with self._lock:  # a candle opened past the next one: some closed ones never came
                if series in self._followed and series not in self._to_sync:
                    self._seen_open[series] = fields["open_time"]
                    self._to_sync[series] = None
                    self._wake.set()

    def backfill(self, request: Backfill) -> None:
        """Reach a series back to ``request.reach`` (an open time): for contract.backfill's worker.

        Raises RestError when REST cannot be called now; the request is then tried again.
        """
        up_to = request.series.startswith("klineto_")
        interval = request.series.partition("_")[2]
        series = (request.symbol, interval)
        first = self.client.zrange(klines_key(interval, request.symbol), 0, 0)
        if not first:
            with self._lock:  # the stream's own seed is on its way: the server asks again if need be
                syncing = series in self._to_sync or series in self._waiting
            if syncing:
                return
            self._sync(series)
            first = self.client.zrange(klines_key(interval, request.symbol), 0, 0)
            if not first:
                return
        first_open, _ = row_times(first[0])
        # Up to an end: the page's worth of candles before it (or before the first kept one).
        reach = (
            max(0, min(first_open, request.reach) - PAGE * LONGEST_MS[interval]) if up_to else request.reach
        )
        if first_open <= reach:
            return
        kept = self.client.zcard(klines_key(interval, request.symbol))
        if kept + (first_open - reach) // SHORTEST_MS[interval] > self.cap:
            # Too far back to keep in line: a page of its own.
            if up_to:
                self._page(
                    series, page_to_key(interval, request.symbol, request.reach), {"endTime": request.reach}
                )
            else:
                self._page(series, page_key(interval, request.symbol, reach), {"startTime": reach})
            return
        while first_open > reach:
            rows = self._get({"endTime": str(first_open - 1), "limit": str(PAGE)}, series)
            mode = "prepend-origin" if len(rows) < PAGE else "prepend"
            if not rows:
                self._run_write(series, "prepend-origin", [])
                return
            kept = self._run_write(series, mode, rows)
            if kept == -3:
                logger.info("klines: %s %s: not reaching back past %d kept candles (KLINE_HISTORY_MAX)",
                            *series, self.cap)  # fmt: skip
                return
            if kept < 0 or mode == "prepend-origin":
                return
            first_open = rows[0][0]

    def _page(self, series: Series, key: str, bound: dict[str, int]) -> None:
        """Fetch the closed candles from or up to a time (one call) into a page of their own,
        unless a page of them is there already."""
        if self.client.exists(key):
            return
        now = int(time.time() * 1000)
        params = {name: str(value) for name, value in bound.items()}
        rows = [r for r in self._get({**params, "limit": str(PAGE_ROWS)}, series) if r[6] < now]
        self.client.set(key, orjson.dumps(rows), px=PAGE_TTL_MS)
        logger.info("klines: %s %s: a page of %d older candles (%s)", *series, len(rows), params)

    # -- the worker's thread ------------------------------------------------------------

    def run(self) -> None:
        """Sync new and broken series, append closed candles, until stopped."""
        while not self._stopping.is_set():
            self._wake.wait(RETRY_S)
            self._wake.clear()
            try:
                self._append_closed()
                if time.monotonic() >= self._rest_paused_until:
                    self._sync_due()
                self._backoff.reset()
            except RateLimited as exc:
                # Closed candles from the streams are still appended meanwhile: only REST waits.
                self.failures += 1
                logger.warning("klines: REST paused (%s); series are synced later", exc)
                self._rest_paused_until = time.monotonic() + min(exc.retry_after_s, 60.0)
            except (RestError, redis.RedisError) as exc:
                self.failures += 1
                delay = self._backoff.next_delay()
                logger.warning("klines: %s; trying again in %.1f s", exc, delay)
                self._stopping.wait(delay)

    def _append_closed(self) -> None:
        """Append the closed candles that came in, in one round trip; refusals become syncs."""
        batch: list[tuple[Series, list[Any]]] = []
        while self._closed:
            batch.append(self._closed.popleft())
        with self._lock:  # appended even while a sync is due: the script refuses what leaves a hole
            batch = [(s, row) for s, row in batch if s in self._followed]
        if not batch:
            return
        pipe = self.client.pipeline(transaction=False)
        for series, row in batch:
            self._write_on(pipe, series, "append", [row])
        results = pipe.execute()
        for (series, row), kept in zip(batch, results, strict=True):
            if kept < 0:
                self.refused += 1
                with self._lock:
                    self._to_sync[series] = None
                    self._next_open.pop(series, None)  # Redis disagrees: a sync must settle it
            else:
                self.appended += 1
                self._next(series, row[6] + 1)

    def _sync_due(self) -> None:
        """Sync a few due series, then let closed candles be appended again (the loop comes back)."""
        for _ in range(SYNCS_PER_ROUND):
            if self._stopping.is_set():
                return
            with self._lock:
                series = next(iter(self._to_sync), None)
                if series is None:
                    return
                seen = self._seen_open.pop(series, None)
                if (
                    series not in self._followed
                    or series in self._waiting  # carried again: synced once its new stream is live
                    or (seen is not None and self._next_open.get(series) == seen)
                ):
                    del self._to_sync[series]  # gone, or the closed candles that came filled the gap
                    continue
            self._sync(series)  # raises, leaving the series due, if REST or Redis fails
            with self._lock:
                self._to_sync.pop(series, None)
        if self._to_sync:
            self._wake.set()  # more are due: back at once, after the appends

    def _sync(self, series: Series) -> None:
        """Make the kept candles reach the last closed one: fetch the gap, or seed afresh."""
        symbol, interval = series
        last = self.client.zrange(klines_key(interval, symbol), -1, -1)
        if last:
            _, last_close = row_times(last[0])
            if self._fill_from(series, last_close + 1):
                return
        # KLINE_HISTORY counts the open candle, so the default takes one call: the last 1,000.
        asked = min(self.keep, PAGE)
        page = self._get({"limit": str(asked)}, series)
        origin, rows = len(page) < asked, page[:-1]  # the most recent is the open candle
        while len(rows) < self.keep - 1 and rows and not origin:
            asked = min(PAGE, self.keep - 1 - len(rows))
            older = self._get({"endTime": str(rows[0][0] - 1), "limit": str(asked)}, series)
            origin, rows = len(older) < asked, older + rows
        if self._run_write(series, "seed-origin" if origin else "seed", rows) >= 0 and rows:
            self._next(series, rows[-1][6] + 1)
        logger.info("klines: %s %s seeded with %d candles", symbol, interval, len(rows))

    def _fill_from(self, series: Series, start: int) -> bool:
        """Fetch and append the closed candles from ``start`` on; False if seeding is cheaper."""
        rows: list[list[Any]] = []
        while True:
            page = self._get({"startTime": str(start), "limit": str(PAGE)}, series)
            if len(page) < PAGE:
                rows += page[:-1]  # the most recent is the open candle
                break
            rows += page
            start = page[-1][6] + 1
            if len(rows) >= self.keep:
                return False
        if rows:
            kept = self._run_write(series, "append", rows)
            if kept < 0:
                return False
        if rows:
            self._next(series, rows[-1][6] + 1)
        elif page:
            self._next(series, page[-1][0])
        logger.info("klines: %s %s: %d missing candles fetched", *series, len(rows))
        return True

    def _next(self, series: Series, open_time: int) -> None:
        """The open time of ``series``'s next candle, for a series still followed. Every change of
        _next_open is made under the lock, as follow() iterates it there (a key added meanwhile by
        this thread crashed the messenger's main loop: "dictionary changed size during iteration")."""
        with self._lock:
            if series in self._followed:
                self._next_open[series] = open_time

    def _get(self, params: dict[str, str], series: Series) -> list[list[Any]]:
        symbol, interval = series
        body = self.rest.get(KLINES_PATH, {"symbol": symbol, "interval": interval, **params})
        self.calls += 1
        if not isinstance(body, list) or not all(_is_row(r) for r in body):
            raise RestError(f"klines answer for {symbol} {interval} is not a list of rows")
        self.fetched += len(body)
        return body

    def _run_write(self, series: Series, mode: str, rows: list[list[Any]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        self._write_on(pipe, series, mode, rows)
        kept: int = pipe.execute()[0]
        return kept

    def _write_on(self, pipe: Any, series: Series, mode: str, rows: list[list[Any]]) -> None:
        symbol, interval = series
        args: list[Any] = [mode, self.keep - 1, self.cap, HISTORY_TTL_MS]
        for row in rows:
            args += [row[0], encode_row(row)]
        queue_script(pipe, self._write, write_keys(interval, symbol), args)

    @property
    def followed(self) -> frozenset[Series]:
        """The series kept now."""
        return frozenset(self._followed)


def _is_row(row: Any) -> bool:
    return (
        isinstance(row, list)
        and len(row) >= 12
        and type(row[0]) is int
        and type(row[6]) is int
        and all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10))
        and type(row[8]) is int
    )
