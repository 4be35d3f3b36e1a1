"""The exchange's symbol list, from ``GET /api/v3/exchangeInfo``, mirrored to Redis for the server.

Fetched at start and every ``CATALOG_REFRESH_S`` (weight 20: never in a loop), on its own
thread. The server answers unknown and non-trading symbols from the copy in Redis, which is
replaced in one transaction and rewritten if Redis comes back empty.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis

from contract.keys import EXCHANGE_INFO_KEY, SYMBOLS_KEY
from messenger.backoff import Backoff
from messenger.reachability import REST, Reachability
from messenger.rest import EXCHANGE_INFO_PATH, BinanceRest, RateLimited, RestError
from messenger.worker import Worker

logger = logging.getLogger(__name__)

TRADING = "TRADING"
# How often the copy in Redis is checked (it is gone if Redis restarted).
CHECK_S = 5.0


def statuses_of(exchange_info: dict[str, Any]) -> dict[str, str]:
    """Symbol -> status from an exchangeInfo document; entries without both are skipped."""
    out = {}
    for entry in exchange_info.get("symbols", ()):
        if isinstance(entry, dict):
            symbol, status = entry.get("symbol"), entry.get("status")
            if isinstance(symbol, str) and isinstance(status, str):
                out[symbol] = status
    return out


class Catalog(Worker):
    """The latest symbol list; ``version`` moves on whenever it changes."""

    def __init__(
        self, rest: BinanceRest, client: redis.Redis, refresh_s: float, reach: Reachability | None = None
    ) -> None:
        super().__init__("catalog")
        self.rest = rest
        self.client = client
        self.refresh_s = refresh_s
        self.reach = reach or Reachability()
        self.statuses: dict[str, str] | None = None
        self.trading: frozenset[str] | None = None
        self.version = 0
        self.fetches = 0
        self._doc: bytes | None = None
        self._in_redis = False
        self._backoff = Backoff(1.0, 60.0)

    def run(self) -> None:
        """Fetch now, then every ``refresh_s``; keep the copy in Redis."""
        next_fetch = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() >= next_fetch:
                next_fetch = time.monotonic() + self._fetch()
            self._mirror()
            self._stopping.wait(min(CHECK_S, max(0.0, next_fetch - time.monotonic())))

    def _fetch(self) -> float:
        """Fetch the list; returns the seconds until the next fetch."""
        url = self.rest.base_url + EXCHANGE_INFO_PATH
        try:
            doc = self.rest.exchange_info()
        except RateLimited as exc:
            logger.warning("catalog: exchangeInfo: %s", exc)
            return exc.retry_after_s
        except RestError as exc:
            # Not a traceback: what failed, where, and when the next try is.
            self.reach.failed(REST, url, exc.what)
            delay = min(self._backoff.next_delay(), self.refresh_s)
            logger.warning("catalog: exchangeInfo failed: %s; retrying in %.0f s", exc, delay)
            return delay
        self.reach.reached(REST, url)
        self._backoff.reset()
        self.fetches += 1
        statuses = statuses_of(doc)
        if statuses != self.statuses:
            self._log_change(statuses)
            trading = frozenset(s for s, status in statuses.items() if status == TRADING)
            self.statuses, self.trading = statuses, trading
            self._doc = orjson.dumps(doc)
            self._in_redis = False
            self.version += 1
        return self.refresh_s

    def _log_change(self, statuses: dict[str, str]) -> None:
        trading = sum(1 for s in statuses.values() if s == TRADING)
        if self.statuses is None:
            logger.info("catalog: %d symbols, %d trading", len(statuses), trading)
            return
        listed = sorted(s for s, st in statuses.items() if st == TRADING and self.statuses.get(s) != TRADING)
        stopped = sorted(s for s, st in self.statuses.items() if st == TRADING and statuses.get(s) != TRADING)
        logger.info("catalog: %d trading; now trading: %s; stopped: %s",
                    trading, ", ".join(listed[:20]) or "none", ", ".join(stopped[:20]) or "none")  # fmt: skip

    def _mirror(self) -> None:
        """Put the list in Redis, in one transaction, unless it is there already."""
        if self.statuses is None or self._doc is None:
            return
        try:
            if self._in_redis and self.client.exists(SYMBOLS_KEY):
                return
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(SYMBOLS_KEY)
            statuses: dict[Any, str] = self.statuses
            pipe.hset(SYMBOLS_KEY, mapping=statuses)
            pipe.set(EXCHANGE_INFO_KEY, self._doc)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("catalog: could not write the symbol list to Redis (%s)", exc)
            return
        self._in_redis = True
