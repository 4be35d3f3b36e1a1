"""Seeds values over REST for keys a connection carries but has no value for yet.

A quiet symbol may not change for minutes, so after a (re)connect or a new subscription its
stream stays silent and nothing could be served. One ``GET /api/v3/ticker/bookTicker`` for
many symbols (weight 4) fills them in at once. The book applies a seed only while no
streamed value is current, so REST never overwrites a newer streamed one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from messenger.backoff import Backoff
from messenger.binance import BOOK_TICKER, MalformedFrame, book_ticker_from_rest
from messenger.book import Book, Voucher
from messenger.rest import BinanceRest, RateLimited, RestError
from messenger.routes import Route
from messenger.worker import Worker

logger = logging.getLogger(__name__)

# Let requests from connections that subscribe together share one REST call.
GATHER_S = 0.02


class Seeder(Worker):
    """Runs REST seed requests on its own thread, batched, within Binance's limits."""

    def __init__(self, book: Book, rest: BinanceRest) -> None:
        super().__init__("rest-seeder")
        self.book = book
        self.rest = rest
        self.seeded = 0
        self.failures = 0
        self._jobs: list[tuple[Voucher, list[Route]]] = []
        self._cond = threading.Condition()
        self._backoff = Backoff(0.5, 30.0)

    def stop(self) -> None:
        """Stop after the call in flight, if any."""
        super().stop()
        with self._cond:
            self._cond.notify()

    def request(self, conn: Voucher, routes: Sequence[Route]) -> None:
        """Seed these routes on behalf of ``conn`` (only bookTicker has a REST twin)."""
        seedable = [r for r in routes if r.kind is BOOK_TICKER]
        if seedable:
            with self._cond:
                self._jobs.append((conn, seedable))
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
            if jobs:
                self._seed(jobs)

    def _still_pending(self, jobs: list[tuple[Voucher, list[Route]]]) -> list[tuple[Voucher, list[Route]]]:
        live = []
        for conn, routes in jobs:
            pending = self.book.pending_keys(conn)
            wanted = [r for r in routes if r.key in pending]
            if wanted:
                live.append((conn, wanted))
        return live

    def _seed(self, jobs: list[tuple[Voucher, list[Route]]]) -> None:
        symbols = sorted({r.symbol for _, routes in jobs for r in routes})
        requested_at = time.monotonic()
        try:
            entries = self.rest.book_tickers(symbols)
        except RestError as exc:
            self.failures += 1
            delay = exc.retry_after_s if isinstance(exc, RateLimited) else self._backoff.next_delay()
            logger.warning("seed: %d symbols not seeded (%s); retrying in %.1f s", len(symbols), exc, delay)
            with self._cond:
                self._jobs[:0] = jobs
            self._stopping.wait(delay)
            return
        self._backoff.reset()
        by_symbol = {e.get("symbol"): e for e in entries if isinstance(e, dict)}
        now = time.monotonic()
        applied = 0
        for conn, routes in jobs:
            for route in routes:
                entry = by_symbol.get(route.symbol)
                if entry is None:
                    continue
                try:
                    fields = book_ticker_from_rest(entry)
                except MalformedFrame as exc:
                    logger.warning("seed: skipping %s: %s", route.symbol, exc)
                    continue
                applied += self.book.seed(conn, route.key, fields, requested_at, now)
        self.seeded += applied
        logger.info("seed: %d of %d symbols seeded over REST", applied, len(symbols))
