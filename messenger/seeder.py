"""Seeds values over REST for keys a connection carries but has no value for yet.

A quiet symbol may not change, or trade, for minutes, so after a (re)connect or a new
subscription its stream stays silent and nothing could be served. The kinds Binance pushes
only on change are seeded from their REST twins: bookTicker with one call for many symbols
(``GET /api/v3/ticker/bookTicker``, weight 4), trade (``/api/v3/trades``, weight 25, which
also fills the recent-trades list) and aggTrade (``/api/v3/aggTrades``, weight 4) one symbol
a call. Kinds pushed on a timer (tickers, klines, depth, average price) arrive within their
period without REST. The book applies a seed only while no streamed value is current, so
REST never overwrites a newer streamed one; the REST client pauses when Binance says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from contract.keys import RECENT_TRADES_KEPT
from messenger.backoff import Backoff
from messenger.binance import (
    BOOK_TICKER,
    TRADE,
    Fields,
    MalformedFrame,
    Order,
    agg_trade_from_rest,
    book_ticker_from_rest,
    trade_from_rest,
)
from messenger.book import Book, Voucher
from messenger.rest import BinanceRest, RateLimited, RestError
from messenger.routes import Route
from messenger.worker import Worker

logger = logging.getLogger(__name__)

# Let requests from connections that subscribe together share one REST call.
GATHER_S = 0.02
# Kinds seeded one symbol a call take at most this many calls a round, so others get a turn.
CALLS_PER_ROUND = 20
SEEDED_KINDS = frozenset({BOOK_TICKER.name, TRADE.name, "aggTrade"})

Job = tuple[Voucher, Route]
Seed = tuple[Order, Fields, list[tuple[Order, Fields]] | None]  # order, fields, recent items


class Seeder(Worker):
    """Runs REST seed requests on its own thread, batched, within Binance's limits."""

    def __init__(self, book: Book, rest: BinanceRest) -> None:
        super().__init__("rest-seeder")
        self.book = book
        self.rest = rest
        self.seeded = 0
        self.failures = 0
        self._jobs: list[Job] = []
        self._cond = threading.Condition()
        self._backoff = Backoff(0.5, 30.0)

    def stop(self) -> None:
        """Stop after the call in flight, if any."""
        super().stop()
        with self._cond:
            self._cond.notify()

    def request(self, conn: Voucher, routes: Sequence[Route]) -> None:
        """Seed these routes on behalf of ``conn`` (kinds pushed on a timer need none)."""
        jobs = [(conn, r) for r in routes if r.kind.name in SEEDED_KINDS]
        if jobs:
            with self._cond:
                self._jobs.extend(jobs)
                self._cond.notify()

    def run(self) -> None:
        """Seed what is asked for, in batches."""
        while not self._stopping.is_set():
            with self._cond:
                if not self._jobs:
                    self._cond.wait(1.0)
                    continue
            self._stopping.wait(GATHER_S)
            with self._cond:
                jobs, self._jobs = self._jobs, []
            jobs = self._still_pending(jobs)
            by_kind: dict[str, list[Job]] = {}
            for job in jobs:
                by_kind.setdefault(job[1].kind.name, []).append(job)
            for kind, kind_jobs in by_kind.items():
                if not self._seed(kind, kind_jobs):
                    break

    def _still_pending(self, jobs: list[Job]) -> list[Job]:
        pending: dict[Voucher, set[str]] = {}
        out = []
        for conn, route in jobs:
            if conn not in pending:
                pending[conn] = self.book.seed_wanted(conn)
            if route.key in pending[conn]:
                out.append((conn, route))
        return out

    def _seed(self, kind: str, jobs: list[Job]) -> bool:
        """Fetch and apply one kind's seeds; False (and the jobs back in the queue) on failure."""
        symbols = sorted({route.symbol for _, route in jobs})
        if kind != BOOK_TICKER.name and len(symbols) > CALLS_PER_ROUND:
            later = set(symbols[CALLS_PER_ROUND:])
            self._requeue([job for job in jobs if job[1].symbol in later])
            jobs = [job for job in jobs if job[1].symbol not in later]
            symbols = symbols[:CALLS_PER_ROUND]
        requested_at = time.monotonic()
        try:
            seeds = self._fetch(kind, symbols)
        except RestError as exc:
            self.failures += 1
            delay = exc.retry_after_s if isinstance(exc, RateLimited) else self._backoff.next_delay()
            logger.warning("seed: %d %s not seeded (%s); retrying in %.1f s", len(symbols), kind, exc, delay)
            self._requeue(jobs)
            self._stopping.wait(delay)
            return False
        self._backoff.reset()
        now = time.monotonic()
        applied = 0
        for conn, route in jobs:
            seed = seeds.get(route.symbol)
            if seed is None:
                continue
            order, fields, items = seed
            history = (route.history_key, items) if route.history_key and items is not None else None
            applied += self.book.seed(conn, route.key, fields, requested_at, now, order, history)
        self.seeded += applied
        logger.info("seed: %d of %d %s seeded over REST", applied, len(symbols), kind)
        return True

    def _fetch(self, kind: str, symbols: list[str]) -> dict[str, Seed]:
        seeds: dict[str, Seed] = {}
        if kind == BOOK_TICKER.name:
            for entry in self.rest.book_tickers(symbols):
                self._add(seeds, entry.get("symbol") if isinstance(entry, dict) else None,
                          lambda e=entry: (None, book_ticker_from_rest(e), None))  # fmt: skip
            return seeds
        for symbol in symbols:
            if kind == TRADE.name:
                trades = self.rest.recent("/api/v3/trades", symbol, RECENT_TRADES_KEPT)
                self._add(seeds, symbol, lambda t=trades, s=symbol: _latest_with_items(t, s))
            else:
                aggs = self.rest.recent("/api/v3/aggTrades", symbol, 1)
                self._add(seeds, symbol, lambda a=aggs, s=symbol: (*agg_trade_from_rest(a[-1], s), None))
        return seeds

    @staticmethod
    def _add(seeds: dict[str, Seed], symbol: Any, make: Any) -> None:
        if not isinstance(symbol, str):
            return
        try:
            seeds[symbol] = make()
        except (MalformedFrame, IndexError) as exc:
            logger.warning("seed: skipping %s: %s", symbol, exc or "nothing traded")

    def _requeue(self, jobs: list[Job]) -> None:
        with self._cond:
            self._jobs[:0] = jobs


def _latest_with_items(trades: list[Any], symbol: str) -> Seed:
    items = [trade_from_rest(t, symbol) for t in trades]
    order, fields = items[-1]
    return order, fields, items
