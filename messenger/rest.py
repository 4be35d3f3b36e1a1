"""A small client for Binance's public REST endpoints, that honours its rate limits.

Binance bans IPs that keep calling after a 429; so after a 429 or 418 this client refuses
to call again until ``Retry-After`` has passed, and it pauses by itself when the minute's
used weight (``X-MBX-USED-WEIGHT-1M``) nears the limit.

With an egress (messenger.egress), every call first takes its weight (``request_weight``) from
the budget all members behind the same address share, and a 429/418 holds every one of them.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from messenger.egress import BACKOFF, Egress

logger = logging.getLogger(__name__)

WEIGHT_LIMIT_PER_MINUTE = 6000
# Leave most of the minute's weight to anything else on this IP.
WEIGHT_BUDGET_SHARE = 0.5
# Above this many symbols one "all symbols" call (weight 4) beats a long symbols=[...] URL.
MAX_LISTED_SYMBOLS = 100
EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"


class RestError(Exception):
    """The call failed (network, HTTP error, or a body that is not the expected JSON).

    ``url`` is what was called (without its query), ``what`` what went wrong, in plain words.
    """

    def __init__(self, what: str, url: str = "") -> None:
        super().__init__(f"{url}: {what}" if url else what)
        self.what = what
        self.url = url


class RateLimited(RestError):
    """Binance said to wait (429/418), or our own weight budget is spent."""

    def __init__(self, retry_after_s: float, why: str) -> None:
        super().__init__(f"{why}; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


def request_weight(path: str, params: dict[str, str]) -> int:
    """Binance's request weight of ``GET path?params`` (the higher figure where the docs and the
    simulator differ: taking too much from the budget is safe, too little is not)."""
    one, listed = "symbol" in params, params.get("symbols")
    count = listed.count(",") + 1 if listed else 0
    if path == "/api/v3/depth":
        limit = int(params.get("limit", "100"))
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    if path == "/api/v3/ticker/bookTicker":
        return 2 if one else 4
    if path == "/api/v3/ticker/24hr":
        return 2 if one else 40 if listed and count <= 100 else 80
    if path == "/api/v3/ticker":
        return 4 if one or not listed else 200 if count > 50 else 4 * count
    return PATH_WEIGHTS.get(path, 1)


# Weights that do not depend on the parameters (rest-api.md; the simulator's are the same).
PATH_WEIGHTS = {
    EXCHANGE_INFO_PATH: 20,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/aggTrades": 4,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
    "/api/v3/avgPrice": 2,
}


class BinanceRest:
    """Thread-safe calls to ``BINANCE_REST_URL``."""

    def __init__(self, base_url: str, timeout_s: float = 10.0, egress: Egress | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.egress = egress
        self.used_weight = 0
        self.calls = 0
        self.rate_limited = 0
        # Until when Binance itself said to wait (429/418; monotonic): limits and bans are per
        # IP, so the supervisor opens no new WebSocket connection before then either.
        self.ip_wait_until = 0.0
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def book_tickers(self, symbols: list[str] | None) -> list[dict[str, Any]]:
        """``GET /api/v3/ticker/bookTicker`` for these symbols (None, or many: all of them)."""
        params = {}
        if symbols is not None and len(symbols) <= MAX_LISTED_SYMBOLS:
            params["symbols"] = orjson.dumps(sorted(symbols)).decode()
        body = self.get("/api/v3/ticker/bookTicker", params)
        if not isinstance(body, list):
            raise RestError("bookTicker answer is not a list")
        return body

    def tickers_24hr(self, symbols: list[str]) -> list[dict[str, Any]]:
        """``GET /api/v3/ticker/24hr`` for these symbols (weight 2 to 40; many: all, weight 80)."""
        params = {}
        if len(symbols) <= MAX_LISTED_SYMBOLS:
            params["symbols"] = orjson.dumps(sorted(symbols)).decode()
        body = self.get("/api/v3/ticker/24hr", params)
        if not isinstance(body, list):
            raise RestError("24hr answer is not a list")
        return body

    def recent(self, path: str, symbol: str, limit: int) -> list[Any]:
        """``GET /api/v3/trades`` (weight 25) or ``/api/v3/aggTrades`` (weight 4): oldest first."""
        body = self.get(path, {"symbol": symbol, "limit": str(limit)})
        if not isinstance(body, list):
            raise RestError(f"{path} answer is not a list")
        return body

    def exchange_info(self) -> dict[str, Any]:
        """``GET /api/v3/exchangeInfo`` (weight 20)."""
        body = self.get(EXCHANGE_INFO_PATH, {})
        if not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
            raise RestError("the answer has no symbol list", self.base_url + EXCHANGE_INFO_PATH)
        return body

    def get(self, path: str, params: dict[str, str]) -> Any:
        """One GET; raises RateLimited while Binance (or our budget) says to wait."""
        with self._lock:
            wait = self._blocked_until - time.monotonic()
        if wait > 0:
            raise RateLimited(wait, "REST paused")
        if self.egress is not None:
            grant = self.egress.take_weight(request_weight(path, params))
            if not grant.granted:
                # Another member's 429/418 holds this one's new connections too.
                self._block(grant.wait_s, by_binance=grant.why == BACKOFF)
                raise RateLimited(grant.wait_s, f"egress {self.egress.name}: {grant.why}")
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        # The scheme is http(s): Settings checks BINANCE_REST_URL at start.
        where = self.base_url + path
        request = urllib.request.Request(where + query, headers={"Accept": "application/json"})  # noqa: S310
        self.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = response.read()
                self._note_weight(response.headers.get("X-MBX-USED-WEIGHT-1M"))
        except urllib.error.HTTPError as exc:
            if exc.code in (429, 418):
                self.rate_limited += 1
                retry_after = retry_after_s(exc.headers.get("Retry-After"))
                self._block(retry_after, by_binance=True)
                if self.egress is not None:
                    self.egress.back_off(retry_after)
                raise RateLimited(retry_after, f"HTTP {exc.code} from {path}") from None
            raise RestError(f"HTTP {exc.code} {exc.read()[:200]!r}", where) from None
        except urllib.error.URLError as exc:
            raise RestError(f"cannot connect ({exc.reason})", where) from None
        except OSError as exc:  # the connection broke, or the answer was late
            raise RestError(f"no answer ({exc or type(exc).__name__})", where) from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise RestError("the answer is not JSON", where) from None

    def _note_weight(self, header: str | None) -> None:
        if header is None or not header.isdigit():
            return
        self.used_weight = int(header)
        if self.egress is not None:
            self.egress.observed_weight(self.used_weight)
        # With an egress, the IP's weight beyond its budget was spent by something that does not
        # take from it: pause all the same.
        limit = WEIGHT_LIMIT_PER_MINUTE * WEIGHT_BUDGET_SHARE
        if self.egress is not None:
            limit = self.egress.weight_per_minute
        if self.used_weight > limit:
            # The minute's window rolls over within 60 s.
            self._block(60.0)
            logger.warning("rest: used weight %d this minute; pausing REST calls", self.used_weight)

    def _block(self, seconds: float, by_binance: bool = False) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            self._blocked_until = max(self._blocked_until, until)
            if by_binance:
                self.ip_wait_until = max(self.ip_wait_until, until)


def retry_after_s(header: str | None) -> float:
    """Seconds a 429/418's ``Retry-After`` asks for (at least 1; 60 when absent or unreadable)."""
    try:
        return max(1.0, float(header)) if header else 60.0
    except ValueError:
        return 60.0
