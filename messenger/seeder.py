"""Seeds values over REST for keys a connection carries but has no value for yet.

After a (re)connect or a new subscription a stream says nothing until its next change or tick:
a quiet symbol's bookTicker may not change for minutes, a kline comes every 2 s. So every
kind is seeded from its REST twin at once: bookTicker (``/api/v3/ticker/bookTicker``), the
24 h tickers (``/api/v3/ticker/24hr``) and the rolling-window tickers (``/api/v3/ticker``, up to
100 symbols a call) with one call for many symbols; trades and aggregate trades (through
messenger.trade_history, which catches their kept lists up in the same call), average price, depth
and klines one symbol a call, a few a round. The book applies a seed only while no streamed value
is current, so REST never overwrites a newer streamed one; the REST client pauses when Binance says
so, and when the minute's weight nears its budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import orjson

from contract import kinds
from contract.kinds import ROLLING_WINDOWS
from messenger.backoff import Backoff
from messenger.binance import (
    BOOK_TICKER,
    TRADE,
    Fields,
    MalformedFrame,
    Order,
    agg_trade_from_rest,
    avg_price_from_rest,
    book_ticker_from_rest,
    depth_from_rest,
    kline_from_rest,
    rolling_ticker_from_rest,
    ticker_from_rest,
    trade_from_rest,
)
from messenger.book import Book, Voucher
from messenger.rest import BinanceRest, RateLimited, RestError
from messenger.routes import Route
from messenger.trade_history import TradeHistory
from messenger.worker import Worker

logger = logging.getLogger(__name__)

# Let requests from connections that subscribe together share one REST call.
GATHER_S = 0.02
# Kinds Binance serves for many symbols in one call; the others are seeded a symbol a call.
ROLLING_KINDS = {f"ticker_{w}": w for w in ROLLING_WINDOWS}
BATCHED_KINDS = frozenset({BOOK_TICKER.name, "ticker", "miniTicker", *ROLLING_KINDS})
# /api/v3/ticker (rolling windows) takes at most this many symbols a call (weight 4 each, 200 from 50 on).
ROLLING_SYMBOLS_PER_CALL = 100
# Kinds seeded one symbol a call take at most this many calls a round, so others get a turn.
CALLS_PER_ROUND = 20

Job = tuple[Voucher, Route]
Seed = tuple[Order, Fields]


class Seeder(Worker):
    """Runs REST seed requests on its own thread, batched, within Binance's limits."""

    def __init__(self, book: Book, rest: BinanceRest, history: TradeHistory | None = None) -> None:
        super().__init__("rest-seeder")
        self.book = book
        self.rest = rest
        self.history = history
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
        """Seed these routes on behalf of ``conn``."""
        # A local order book fetches its own snapshot (messenger.order_books): never seeded here.
        jobs = [(conn, r) for r in routes if not r.kind.diff]
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
        if kind not in BATCHED_KINDS and len(symbols) > CALLS_PER_ROUND:
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
            order, fields = seed
            applied += self.book.seed(conn, route.key, fields, requested_at, now, order)
        self.seeded += applied
        logger.info("seed: %d of %d %s seeded over REST", applied, len(symbols), kind)
        return True

    def _fetch(self, kind: str, symbols: list[str]) -> dict[str, Seed]:
        """REST values of one kind: one call for many symbols where Binance has one."""
        seeds: dict[str, Seed] = {}
        if kind in BATCHED_KINDS:
            if kind == BOOK_TICKER.name:
                batch = self.rest.book_tickers(symbols)
            elif kind in ROLLING_KINDS:
                batch = self._rolling(symbols, ROLLING_KINDS[kind])
            else:
                batch = self.rest.tickers_24hr(symbols)
            wanted = set(symbols)
            for entry in batch:
                symbol = entry.get("symbol") if isinstance(entry, dict) else None
                if symbol in wanted:
                    self._keep(seeds, symbol, partial(_from_batch, kind, entry))
            return seeds
        for symbol in symbols:
            self._keep(seeds, symbol, partial(self._fetch_one, kind, symbol))
        return seeds

    def _rolling(self, symbols: list[str], window: str) -> list[Any]:
        """``GET /api/v3/ticker?windowSize=``: Binance has no "every symbol" form, so 100 a call."""
        out: list[Any] = []
        for i in range(0, len(symbols), ROLLING_SYMBOLS_PER_CALL):
            chunk = symbols[i : i + ROLLING_SYMBOLS_PER_CALL]
            params = {"symbols": orjson.dumps(chunk).decode(), "windowSize": window}
            body = self.rest.get("/api/v3/ticker", params)
            if isinstance(body, list):
                out.extend(body)
        return out

    def _fetch_one(self, kind: str, symbol: str) -> Seed:
        """One symbol's REST value of a kind that Binance serves a symbol a call."""
        rest = self.rest
        if kind in (TRADE.name, "aggTrade"):
            if self.history is not None:
                # One call seeds the record and catches the kept list up (only what it misses).
                latest = self.history.catch_up(kinds.key_kind(kind), symbol, seed=True)
                if latest is None:
                    raise IndexError("no trades")
                return latest
            if kind == TRADE.name:
                return trade_from_rest(rest.recent("/api/v3/trades", symbol, 1)[-1], symbol)
            return agg_trade_from_rest(rest.recent("/api/v3/aggTrades", symbol, 1)[-1], symbol)
        if kind == "avgPrice":
            return None, avg_price_from_rest(rest.get("/api/v3/avgPrice", {"symbol": symbol}), symbol)
        if kind.startswith("depth"):
            levels = int(kind.removeprefix("depth"))
            doc = rest.get("/api/v3/depth", {"symbol": symbol, "limit": str(levels)})
            return depth_from_rest(doc, symbol, levels)
        interval = kind.removeprefix("kline_")
        rows = rest.get("/api/v3/klines", {"symbol": symbol, "interval": interval, "limit": "1"})
        return None, kline_from_rest(rows[-1], symbol, interval)

    @staticmethod
    def _keep(seeds: dict[str, Seed], symbol: Any, fetch: Callable[[], Seed]) -> None:
        """Fetch one seed into ``seeds``; a malformed or empty answer is logged and skipped."""
        try:
            seeds[symbol] = fetch()
        except (MalformedFrame, IndexError, KeyError, TypeError) as exc:
            logger.warning("seed: skipping %s: %s", symbol, exc or "nothing to seed from")

    def _requeue(self, jobs: list[Job]) -> None:
        with self._cond:
            self._jobs[:0] = jobs


def _from_batch(kind: str, entry: Any) -> Seed:
    if kind == BOOK_TICKER.name:
        return None, book_ticker_from_rest(entry)
    if kind in ROLLING_KINDS:
        return None, rolling_ticker_from_rest(entry)
    return None, ticker_from_rest(entry, mini=kind == "miniTicker")
