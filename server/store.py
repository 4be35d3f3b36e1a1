"""Reading snapshots, the symbol list and stream states from Redis; registering demand.

The only place the server reads or writes Redis (live push listens through push.py's hub).
Every call is one round trip, for any number of symbols.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contract.keys import (
    DEMAND_CHANNEL,
    DEMAND_KEY,
    EXCHANGE_INFO_KEY,
    STREAMS_KEY,
    SYMBOLS_KEY,
    demand_member,
    recent_trades_key,
    snapshot_key,
)
from contract.records import MalformedRecord, decode_record
from server import metrics

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
    """What Redis knows of a symbol that had no current value a moment ago."""

    catalog_loaded: bool
    status: str | None  # TRADING, BREAK, ... or None if the exchange does not list it
    stream_state: str | None  # pending / live, or None if not streamed
    record: dict[str, Any] | None  # read again with the rest: it may have arrived since


class SnapshotStore:
    """Latest records by kind (its key segment) and symbol, and what else the APIs need."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._touched: dict[str, float] = {}
        self._symbols: tuple[float, tuple[str, ...]] = (0.0, ())
        self._lock = threading.Lock()

    def snapshots(self, kind: str, symbols: list[str]) -> list[dict[str, Any] | None]:
        """The current records (None where there is none), read at one instant (MGET).

        Now and then (per process, at most every TOUCH_EVERY_S per stream) a request is also
        counted as demand in the same round trip, so a symbol in use is never dropped as idle.
        """
        keys = [snapshot_key(kind, s) for s in symbols]
        now = time.monotonic()
        due = [
            m
            for m in (demand_member(kind, s) for s in symbols)
            if now - self._touched.get(m, -1e9) >= TOUCH_EVERY_S
        ]
        try:
            if due:
                for member in due:
                    self._touched[member] = now
                pipe = self.client.pipeline(transaction=False)
                pipe.mget(keys)
                # Only refreshed (XX): new demand goes through server.admission's limits.
                pipe.zadd(DEMAND_KEY, dict.fromkeys(due, int(time.time() * 1000)), xx=True)
                raws = pipe.execute()[0]
            else:
                raws = self.client.mget(keys)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [_decode(key, raw) for key, raw in zip(keys, raws, strict=True)]

    def lookup(self, kind: str, symbols: list[str]) -> list[Lookup]:
        """Is each symbol listed, trading, and streamed (or about to be)?

        The values are read again after the stream states, in the same round trip: the
        messenger writes a first value before it marks a stream live, so a value found
        missing here with its stream live really is not current.
        """
        keys = [snapshot_key(kind, s) for s in symbols]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(SYMBOLS_KEY, symbols)
        pipe.exists(SYMBOLS_KEY)
        pipe.hmget(STREAMS_KEY, keys)
        pipe.mget(keys)
        statuses, loaded, states, raws = self._execute(pipe)
        return [
            Lookup(bool(loaded), _text(status), _text(state), _decode(key, raw))
            for status, state, key, raw in zip(statuses, states, keys, raws, strict=True)
        ]

    def demand(self, kind: str, symbols: list[str]) -> None:
        """Ask the messenger to stream these, now."""
        if not symbols:
            return
        metrics.SPAWNS.labels(kind).inc(len(symbols))
        members = [demand_member(kind, s) for s in symbols]
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(DEMAND_KEY, dict.fromkeys(members, int(time.time() * 1000)))
        pipe.publish(DEMAND_CHANNEL, members[0])
        self._execute(pipe)
        now = time.monotonic()
        for member in members:
            self._touched[member] = now

    def wait(
        self, kind: str, symbols: list[str] | tuple[str, ...], timeout_s: float
    ) -> dict[str, dict[str, Any]]:
        """The records that exist within ``timeout_s`` (all of them, or as many as came)."""
        deadline = time.monotonic() + timeout_s
        keys = [snapshot_key(kind, s) for s in symbols]
        while True:
            try:
                raws = self.client.mget(keys)
            except redis.RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc
            found = {
                s: r
                for s, k, raw in zip(symbols, keys, raws, strict=True)
                if (r := _decode(k, raw)) is not None
            }
            if len(found) == len(symbols) or time.monotonic() >= deadline:
                return found
            time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))

    def streamed(self, kind: str) -> list[str]:
        """The symbols streamed in this kind now (exchange spelling), from the stream states."""
        prefix = snapshot_key(kind, "")
        try:
            keys = self.client.hkeys(STREAMS_KEY)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        names = (_text(k) or "" for k in keys)
        return sorted(n[len(prefix) :].upper() for n in names if n.startswith(prefix))

    def recent_trades(self, symbol: str, limit: int, timeout_s: float) -> list[Any] | None:
        """The most recent trades, oldest first; None if the list is not there within the timeout.

        The messenger writes the list only once it is whole (the exchange's recent trades, then
        what streamed since), a moment after the stream's first value.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                raws = self.client.lrange(recent_trades_key(symbol), -limit, -1)
            except redis.RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc
            if raws:
                return [orjson.loads(raw) for raw in raws]
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))

    def exchange_info(self) -> dict[str, Any] | None:
        """The last exchangeInfo document the messenger fetched, or None."""
        try:
            raw = self.client.get(EXCHANGE_INFO_KEY)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        doc: dict[str, Any] | None = orjson.loads(raw) if raw else None
        return doc

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
        symbols = tuple(sorted(_text(n) or "" for n in names))
        with self._lock:
            self._symbols = (time.monotonic(), symbols)
        return symbols

    @staticmethod
    def _execute(pipe: Any) -> list[Any]:
        try:
            result: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return result


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
