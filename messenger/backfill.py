"""Backfills: fetches history older than Redis holds, when the server asks (contract.backfill).

The server adds a request to BACKFILL_KEY and publishes on BACKFILL_CHANNEL; this worker takes the
whole set on each wake-up (and every POLL_S, in case one was missed), drops requests older than
BACKFILL_EXPIRY_MS (nobody waits for them any more), and runs each on the handler registered for
its series, oldest first, on its own thread. A handler fetches over REST (messenger/rest.py paces
by weight and honours 429/418) and writes; when it returns, the request is removed. RestError means
try again later: that request after a backoff of its own, and after a RateLimited every request
after its ``retry_after_s``, since Binance counts per IP. Concurrent requests for the same range are
one member of the set, so they share one fetch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import redis

from contract.backfill import BACKFILL_CHANNEL, BACKFILL_EXPIRY_MS, BACKFILL_KEY, Backfill
from contract.redis_client import recover
from messenger.backoff import Backoff
from messenger.rest import RateLimited, RestError
from messenger.worker import Worker

logger = logging.getLogger(__name__)

POLL_S = 1.0
RETRY_BASE_S, RETRY_CAP_S = 0.5, 30.0

Handler = Callable[[Backfill], None]


class Backfills(Worker):
    """Runs backfill requests on the handlers registered for their series."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__("backfills")
        self.client = client
        self.done = 0
        self.failed = 0
        self.expired = 0
        self._handlers: list[tuple[Callable[[str], bool], Handler]] = []
        self._retry_at: dict[str, float] = {}  # member -> monotonic time before which it waits
        self._backoffs: dict[str, Backoff] = {}
        self._paused_until = 0.0  # after a RateLimited: no request before then
        self._unhandled: set[str] = set()
        self._wake = threading.Event()
        self._redis_backoff = Backoff(0.1, 5.0)

    def register(self, series: Callable[[str], bool], handler: Callable[[Backfill], None]) -> None:
        """handler runs on the worker's thread; it fetches over REST (messenger/rest.py, which already
        paces by weight and honours 429/418) and writes; raising RestError means try again later
        (with backoff, or the RateLimited's retry_after_s); returning means done: the request is removed."""
        self._handlers.append((series, handler))

    def wake(self) -> None:
        """Look at the requests now (as a publish on BACKFILL_CHANNEL does)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the request in flight, if any."""
        super().stop()
        self._wake.set()

    def run(self) -> None:
        """Take requests on every wake-up, and every POLL_S in case one was missed."""
        while not self._stopping.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(BACKFILL_CHANNEL)
                while not self._stopping.is_set():
                    self.round()
                    self._redis_backoff.reset()
                    self._wait(pubsub)
            except redis.RedisError as exc:
                logger.warning("backfill: Redis failed (%s); retrying", exc)
                recover(self.client)
                self._stopping.wait(self._redis_backoff.next_delay())
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    def _wait(self, pubsub: redis.client.PubSub) -> None:
        """Until a publish, a wake(), the next retry that is due, or POLL_S."""
        now = time.monotonic()
        due = [t for t in (*self._retry_at.values(), self._paused_until) if t > now]
        timeout = min([POLL_S, *(t - now for t in due)])
        deadline = now + timeout
        while not self._stopping.is_set() and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if pubsub.get_message(timeout=min(left, 0.1)) is not None:
                break
        while pubsub.get_message(timeout=0.0) is not None:
            pass  # a burst of wake-ups needs one round
        self._wake.clear()

    def round(self) -> int:
        """Handle every request that is due once; returns how many were done."""
        now_ms = time.time() * 1000
        requests: list[tuple[bytes, float]] = self.client.zrange(BACKFILL_KEY, 0, -1, withscores=True)  # type: ignore[assignment]
        expired = [m for m, asked in requests if asked < now_ms - BACKFILL_EXPIRY_MS]
        if expired:
            self.client.zrem(BACKFILL_KEY, *expired)
            self.expired += len(expired)
        live = {_text(m) for m, asked in requests if asked >= now_ms - BACKFILL_EXPIRY_MS}
        for gone in [m for m in self._retry_at if m not in live]:
            self._forget(gone)
        done = 0
        for raw, _ in requests:
            member = _text(raw)
            if self._stopping.is_set() or member not in live:
                continue
            now = time.monotonic()
            if now < self._paused_until:
                break
            if now < self._retry_at.get(member, 0.0):
                continue
            request = Backfill.parse(member)
            if request is None:
                logger.warning("backfill: dropping %r: not a request", member)
                self.client.zrem(BACKFILL_KEY, member)
                continue
            handler = self._handler(request.series)
            if handler is None:
                if request.series not in self._unhandled:
                    logger.warning("backfill: no handler for %s; its requests expire", request.series)
                    self._unhandled.add(request.series)
                continue
            if self._run(handler, request, member):
                done += 1
            elif now < self._paused_until or time.monotonic() < self._paused_until:
                break
        return done

    def _run(self, handler: Handler, request: Backfill, member: str) -> bool:
        """Run one request; True if done (and removed)."""
        started = time.monotonic()
        try:
            handler(request)
        except RateLimited as exc:
            self.failed += 1
            self._paused_until = time.monotonic() + exc.retry_after_s
            logger.warning("backfill: %s waits %.1f s: %s", member, exc.retry_after_s, exc)
            return False
        except RestError as exc:
            self.failed += 1
            delay = self._backoffs.setdefault(member, Backoff(RETRY_BASE_S, RETRY_CAP_S)).next_delay()
            self._retry_at[member] = time.monotonic() + delay
            logger.warning("backfill: %s failed (%s); retrying in %.1f s", member, exc, delay)
            return False
        except redis.RedisError:
            raise
        except Exception:
            # A handler's bug must not make the same request fail forever in a tight loop.
            logger.exception("backfill: %s: handler failed; dropping the request", member)
            self.client.zrem(BACKFILL_KEY, member)
            self._forget(member)
            return False
        self.client.zrem(BACKFILL_KEY, member)
        self._forget(member)
        self.done += 1
        logger.info("backfill: %s done in %.0f ms", member, (time.monotonic() - started) * 1000)
        return True

    def _handler(self, series: str) -> Handler | None:
        return next((handler for accepts, handler in self._handlers if accepts(series)), None)

    def _forget(self, member: str) -> None:
        self._retry_at.pop(member, None)
        self._backoffs.pop(member, None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
