"""The backfill worker: requests taken once each, expired ones dropped, failures tried again later."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from contract.backfill import BACKFILL_CHANNEL, BACKFILL_EXPIRY_MS, BACKFILL_KEY, Backfill
from messenger import backfill
from messenger.backfill import Backfills
from messenger.rest import RateLimited, RestError

OLD = Backfill("aggtrade", "BTCUSDT", 100)
OTHER = Backfill("trade", "ETHBTC", 7)


def ask(client: redis.Redis, request: Backfill, age_ms: int = 0) -> None:
    """What the server does: ZADD NX (concurrent asks are one request), then a wake-up."""
    client.zadd(BACKFILL_KEY, {request.member(): int(time.time() * 1000) - age_ms}, nx=True)
    client.publish(BACKFILL_CHANNEL, request.member())


def waiting(client: redis.Redis) -> list[str]:
    members: list[bytes] = client.zrange(BACKFILL_KEY, 0, -1)  # type: ignore[assignment]
    return [m.decode() for m in members]


class Handler:
    def __init__(self, *failures: Exception) -> None:
        self.seen: list[Backfill] = []
        self.failures = list(failures)

    def __call__(self, request: Backfill) -> None:
        self.seen.append(request)
        if self.failures:
            raise self.failures.pop(0)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill, "RETRY_BASE_S", 0.05)


def test_concurrent_asks_for_one_range_share_one_fetch_then_the_request_is_gone(
    fake_redis: redis.Redis,
) -> None:
    worker, handler = Backfills(fake_redis), Handler()
    worker.register(lambda series: series == "aggtrade", handler)
    for _ in range(5):
        ask(fake_redis, OLD)
    assert worker.round() == 1
    assert handler.seen == [OLD]
    assert waiting(fake_redis) == []
    assert worker.round() == 0 and handler.seen == [OLD]


def test_expired_requests_are_dropped_unrun_and_unknown_series_wait_for_their_expiry(
    fake_redis: redis.Redis,
) -> None:
    worker, handler = Backfills(fake_redis), Handler()
    worker.register(lambda series: series == "aggtrade", handler)
    ask(fake_redis, OLD, age_ms=BACKFILL_EXPIRY_MS + 1000)
    ask(fake_redis, OTHER)  # nobody handles "trade" here
    fake_redis.zadd(BACKFILL_KEY, {"garbage": time.time() * 1000})
    assert worker.round() == 0
    assert handler.seen == []
    assert waiting(fake_redis) == [OTHER.member()]
    assert worker.expired == 1


def test_a_rest_error_is_tried_again_after_a_backoff_of_its_own(fake_redis: redis.Redis) -> None:
    worker, handler = Backfills(fake_redis), Handler(RestError("no answer"))
    worker.register(lambda series: True, handler)
    ask(fake_redis, OLD)
    assert worker.round() == 0
    assert waiting(fake_redis) == [OLD.member()]
    assert worker.round() == 0 and len(handler.seen) == 1  # not before its backoff
    deadline = time.monotonic() + 2
    while worker.round() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.seen == [OLD, OLD]
    assert waiting(fake_redis) == []


def test_a_rate_limit_holds_every_request_back_until_retry_after(fake_redis: redis.Redis) -> None:
    worker, handler = Backfills(fake_redis), Handler(RateLimited(0.3, "HTTP 429 from /api/v3/aggTrades"))
    worker.register(lambda series: True, handler)
    ask(fake_redis, OLD)
    time.sleep(0.002)
    ask(fake_redis, OTHER)
    started = time.monotonic()
    assert worker.round() == 0
    assert handler.seen == [OLD]  # OTHER was not tried: Binance counts per IP
    while worker.round() == 0:
        assert time.monotonic() - started < 2
        time.sleep(0.01)
    assert time.monotonic() - started >= 0.3
    assert handler.seen == [OLD, OLD, OTHER]
    assert waiting(fake_redis) == []


def test_a_handler_that_crashes_drops_its_request_rather_than_spin(fake_redis: redis.Redis) -> None:
    worker, handler = Backfills(fake_redis), Handler(KeyError("bug"))
    worker.register(lambda series: True, handler)
    ask(fake_redis, OLD)
    assert worker.round() == 0
    assert waiting(fake_redis) == []


@pytest.fixture
def running(real_redis: redis.Redis) -> Iterator[tuple[Backfills, Handler]]:
    worker, handler = Backfills(real_redis), Handler()
    worker.register(lambda series: True, handler)
    worker.start()
    yield worker, handler
    worker.stop()
    worker._thread.join(2)


@pytest.mark.redis
def test_a_publish_wakes_the_worker_at_once(
    real_redis: redis.Redis, running: tuple[Backfills, Handler]
) -> None:
    _, handler = running
    time.sleep(0.2)  # subscribed, waiting
    asked = time.monotonic()
    ask(real_redis, OLD)
    while not handler.seen:
        assert time.monotonic() - asked < 0.5, "not woken by the publish"
        time.sleep(0.005)
    deadline = time.monotonic() + 1
    while waiting(real_redis) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert waiting(real_redis) == []


@pytest.mark.redis
def test_a_request_whose_publish_was_missed_is_still_taken(
    real_redis: redis.Redis, running: tuple[Backfills, Handler]
) -> None:
    _, handler = running
    real_redis.zadd(BACKFILL_KEY, {OTHER.member(): int(time.time() * 1000)})  # no publish
    deadline = time.monotonic() + backfill.POLL_S + 1
    while not handler.seen:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert handler.seen == [OTHER]
