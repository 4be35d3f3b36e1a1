"""The messenger assembled: book, Redis writer, REST seeder and supervisor, run until stopped."""

from __future__ import annotations

import logging
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contract.settings import Settings
from messenger.book import Book
from messenger.rest import BinanceRest
from messenger.routes import Route
from messenger.seeder import Seeder
from messenger.signals import StopFlags
from messenger.stats import Stats
from messenger.supervisor import Supervisor
from messenger.writer import Writer

logger = logging.getLogger(__name__)

TICK_S = 0.05


def redis_client(settings: Settings) -> redis.Redis:
    """A client that fails fast: the writer owns retries and their backoff."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
    )


class Messenger:
    """Everything the messenger process runs."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.book = Book(settings.liveness_timeout_ms / 1000)
        self.writer = Writer(
            self.book,
            client or redis_client(settings),
            settings.snapshot_ttl_ms,
            settings.refresh_interval_ms / 1000,
        )
        self.rest = BinanceRest(settings.binance_rest_url)
        self.seeder = Seeder(self.book, self.rest)
        self.supervisor = Supervisor(settings, self.book, self.seeder)
        self.stats = Stats(self.supervisor, self.book, self.writer, settings.stats_interval_s)

    def run(self, routes: list[Route], flags: StopFlags) -> None:
        """Carry ``routes`` until a stop flag is set, then stop cleanly."""
        self.writer.start()
        self.seeder.start()
        self.supervisor.want(routes)
        logger.info("messenger: carrying %d streams", len(routes))
        try:
            while not flags.stop.is_set():
                now = time.monotonic()
                self.supervisor.tick(now)
                self.stats.maybe_log(now)
                flags.stop.wait(TICK_S)
        finally:
            self.stop(flags.force)

    def stop(self, force: bool = False) -> None:
        """Close connections and delete the keys we vouched for: they are no longer current."""
        logger.info("messenger: stopping%s", " now" if force else "")
        self.seeder.stop()
        self.supervisor.close_all(timeout_s=0.0 if force else 2.0)
        self.writer.stop(timeout_s=0.5 if force else 3.0)
