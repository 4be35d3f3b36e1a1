"""Reading snapshots, the symbol list and stream states from Redis; registering demand.

The only place the server touches Redis. Every call is one round trip.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contract.keys import (
    DEMAND_CHANNEL,
    DEMAND_KEY,
    STREAMS_KEY,
    SYMBOLS_KEY,
    demand_member,
    snapshot_key,
)
from contract.records import MalformedRecord, decode_record

logger = logging.getLogger(__name__)

SYMBOL_LIST_TTL_S = 30.0
WAIT_POLL_S = 0.02
# A symbol in use is counted as demand at most this often per process. Short and fixed, so that
# it stays well inside the messenger's DEMAND_IDLE_S whatever that is set to (at least 2 s).
TOUCH_EVERY_S = 1.0


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


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis knows of a symbol that has no current value."""

    catalog_loaded: bool
    status: str | None  # TRADING, BREAK, ... or None if the exchange does not list it
    stream_state: str | None  # pending / live, or None if not streamed


class SnapshotStore:
    """Latest records by kind and symbol, and what else the API needs from Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._touched: dict[str, float] = {}
        self._symbols: tuple[float, tuple[str, ...]] = (0.0, ())
        self._lock = threading.Lock()

    def snapshot(self, kind: str, symbol: str) -> dict[str, Any] | None:
        """The current record, or None (expired, invalidated, never written).

        Now and then (per process, at most every TOUCH_EVERY_S) the request is also
        counted as demand in the same round trip, so a symbol in use is never dropped as idle.
        """
        key = snapshot_key(kind, symbol)
        member = demand_member(kind, symbol)
        now = time.monotonic()
        try:
            if now - self._touched.get(member, -1e9) >= TOUCH_EVERY_S:
                self._touched[member] = now
                pipe = self.client.pipeline(transaction=False)
                pipe.get(key)
                pipe.zadd(DEMAND_KEY, {member: int(time.time() * 1000)})
                raw = pipe.execute()[0]
            else:
                raw = self.client.get(key)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return _decode(key, raw)

    def lookup(self, kind: str, symbol: str) -> Lookup:
        """Is the symbol listed, trading, and streamed (or about to be)?"""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(SYMBOLS_KEY, symbol)
        pipe.exists(SYMBOLS_KEY)
        pipe.hget(STREAMS_KEY, snapshot_key(kind, symbol))
        try:
            status, loaded, state = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return Lookup(bool(loaded), _text(status), _text(state))

    def demand(self, kind: str, symbol: str) -> None:
        """Ask the messenger to stream this, now."""
        member = demand_member(kind, symbol)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(DEMAND_KEY, {member: int(time.time() * 1000)})
        pipe.publish(DEMAND_CHANNEL, member)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._touched[member] = time.monotonic()

    def wait(self, kind: str, symbol: str, timeout_s: float) -> dict[str, Any] | None:
        """The first value of a stream being subscribed, or None if none comes within the timeout."""
        deadline = time.monotonic() + timeout_s
        key = snapshot_key(kind, symbol)
        while True:
            try:
                record = _decode(key, self.client.get(key))
            except redis.RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc
            if record is not None or time.monotonic() >= deadline:
                return record
            time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))

    def suggest(self, symbol: str) -> str | None:
        """The listed symbol closest to an unknown one, if any is close."""
        return _closest(symbol, self._symbol_list())

    def _symbol_list(self) -> tuple[str, ...]:
        fetched_at, symbols = self._symbols
        if time.monotonic() - fetched_at < SYMBOL_LIST_TTL_S:
            return symbols
        try:
            names = self.client.hkeys(SYMBOLS_KEY)
        except redis.RedisError:
            return symbols
        symbols = tuple(sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names))
        with self._lock:
            self._symbols = (time.monotonic(), symbols)
        return symbols


@lru_cache(maxsize=1024)
def _closest(symbol: str, symbols: tuple[str, ...]) -> str | None:
    matches = difflib.get_close_matches(symbol, symbols, n=1, cutoff=0.8)
    return matches[0] if matches else None


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _decode(key: str, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        return decode_record(raw)
    except MalformedRecord as exc:
        logger.error("store: %s holds no valid record (%s)", key, exc)
        return None
