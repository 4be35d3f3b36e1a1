"""Reading snapshots from Redis. The only place the server touches Redis."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contract.keys import snapshot_key
from contract.records import MalformedRecord, decode_record

logger = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """Redis did not answer."""


def redis_client(url: str) -> redis.Redis:
    """A pooled client that fails fast; one retry gets past a connection Redis closed on restart."""
    return redis.Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
    )


class SnapshotStore:
    """Latest records by kind and symbol."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def snapshot(self, kind: str, symbol: str) -> dict[str, Any] | None:
        """The current record, or None if there is none (expired, invalidated, never written)."""
        try:
            raw = self.client.get(snapshot_key(kind, symbol))
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if raw is None:
            return None
        try:
            return decode_record(raw)
        except MalformedRecord as exc:
            logger.error("store: %s holds no valid record (%s)", snapshot_key(kind, symbol), exc)
            return None
