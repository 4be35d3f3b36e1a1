"""Reading snapshots, the symbol list and stream states (over every member: contract.members)
from Redis; registering demand.

The only place the server reads or writes Redis (live push listens through hub.py).
Every call is one round trip, for any number of symbols. Records are read through the shared
read rule (contract.servable): one that its connection no longer vouches for is not there.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis

import contract.redis_client
from contract.keys import DEMAND_KEY, SYMBOLS_KEY, demand_member, snapshot_key, snapshot_prefix, symbol_of
from contract.members import StreamStates
from contract.records import MalformedRecord
from contract.servable import CurrentReader, pairs, servable
from contract.settings import Settings

logger = logging.getLogger(__name__)

SYMBOL_LIST_TTL_S = 30.0
WAIT_POLL_S = 0.02
# A symbol in use is counted as demand at most this often per process. Short and fixed, so that
# it stays well inside the messenger's DEMAND_IDLE_S whatever that is set to (at least 2 s).
TOUCH_EVERY_S = 1.0
# How a kind's stored value is served: (record, heard) -> what to serve, or None (see servable).
Decode = Callable[[Any, Any], Any]


class StoreUnavailable(Exception):
    """Redis did not answer."""


def redis_client(settings: Settings) -> redis.Redis:
    """A pooled client that fails fast; one retry gets past a connection Redis closed on restart
    (or a primary that a failover demoted: contract.redis_client)."""
    return contract.redis_client.redis_client(settings, timeout_s=0.5, retries=1)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis knows of a symbol that had no current value a moment ago."""

    catalog_loaded: bool
    status: str | None  # TRADING, BREAK, ... or None if the exchange does not list it
    stream_state: str | None  # pending / live, or None if not streamed
    record: Any  # read again with the rest (decoded, or None): it may have arrived since


class SnapshotStore:
    """Latest records by kind (its key segment) and symbol, and what else the APIs need."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._current = CurrentReader(client)
        self.stream_states = StreamStates(client)  # over every live member (contract.members)
        # Streams counted as demand in the last TOUCH_EVERY_S: pruned as they age, so it holds
        # only what was asked for in the last second or so, however many symbols were ever asked.
        self._touched: dict[str, float] = {}
        self._next_prune = 0.0
        self._symbols: tuple[float, tuple[str, ...]] = (0.0, ())
        self._lock = threading.Lock()

    def snapshots(
        self,
        kind: str,
        symbols: list[str],
        touch: bool = True,
        decode: Decode = servable,
        also: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """The current records (None where there is none), read at one instant (one script).

        Now and then (per process, at most every TOUCH_EVERY_S per stream) a request is also
        counted as demand in the same round trip, so a symbol in use is never dropped as idle.
        ``touch=False``: a read that is no one's use of these symbols (a list of everything
        streamed, the status page), so it must not keep them streamed. ``decode`` turns each
        (record, heard) pair into what is served (a kind may serve its records its own way);
        ``also`` queues more commands on the same round trip (a pipeline), answered after the read.
        """
        keys = [snapshot_key(kind, s) for s in symbols]
        due = self.due(kind, symbols) if touch else []
        try:
            if due or also is not None:
                pipe = self.client.pipeline(transaction=False)
                collect = self._current.queue(keys, pipe)
                if due:
                    # Only refreshed (XX): new demand goes through server.admission's limits.
                    pipe.zadd(DEMAND_KEY, dict.fromkeys(due, int(time.time() * 1000)), xx=True)
                if also is not None:
                    also(pipe)
                flat = collect(pipe.execute())
            else:
                flat = self._current(keys)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [_decode(key, pair, decode) for key, pair in zip(keys, pairs(flat), strict=True)]

    def due(self, kind: str, symbols: list[str]) -> list[str]:
        """The demand members of these streams not counted in the last TOUCH_EVERY_S (now counted):
        the caller refreshes them in DEMAND_KEY (ZADD XX) with its read."""
        return self.due_members([demand_member(kind, s) for s in symbols])

    def due_members(self, members: list[str]) -> list[str]:
        """Those of ``members`` (of any set a request refreshes) not counted in the last
        TOUCH_EVERY_S by this process; they count as counted from now."""
        now = time.monotonic()
        due = [m for m in members if now - self._touched.get(m, -1e9) >= TOUCH_EVERY_S]
        if due:
            self._touch(due, now)
        return due

    def _touch(self, members: list[str], now: float) -> None:
        touched = self._touched
        if now >= self._next_prune:
            self._touched = touched = {m: t for m, t in touched.items() if now - t < TOUCH_EVERY_S}
            self._next_prune = now + TOUCH_EVERY_S
        for member in members:
            touched[member] = now

    def lookup(self, kind: str, symbols: list[str], decode: Decode = servable) -> list[Lookup]:
        """Is each symbol listed, trading, and streamed (or about to be)?

        The values are read again once the stream states are answered: the messenger writes a
        first value before it marks a stream live, so a value found missing here with its stream
        live really is not current. (Two round trips, as the states and the values may be on two
        nodes of a cluster, which a pipeline asks at once: this is the path of a missing value.)
        """
        keys = [snapshot_key(kind, s) for s in symbols]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(SYMBOLS_KEY, symbols)
        pipe.exists(SYMBOLS_KEY)
        self.stream_states.states(keys, pipe)
        statuses, loaded, states = self._execute(pipe)
        try:
            flat = self._current(keys)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [
            Lookup(bool(loaded), _text(status), _text(state), _decode(key, pair, decode))
            for status, state, key, pair in zip(statuses, states, keys, pairs(flat), strict=True)
        ]

    def wait(
        self,
        kind: str,
        symbols: list[str] | tuple[str, ...],
        timeout_s: float,
        decode: Decode = servable,
        enough: Callable[[Any], bool] = lambda record: True,
    ) -> dict[str, Any]:
        """The records that exist within ``timeout_s`` (all of them, or as many as came); with
        ``enough``, only records it accepts count as come (the last ones read are returned)."""
        deadline = time.monotonic() + timeout_s
        keys = [snapshot_key(kind, s) for s in symbols]
        while True:
            try:
                flat = self._current(keys)
            except redis.RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc
            found = {
                s: r
                for s, k, pair in zip(symbols, keys, pairs(flat), strict=True)
                if (r := _decode(k, pair, decode)) is not None
            }
            come = sum(1 for r in found.values() if enough(r))
            if come == len(symbols) or time.monotonic() >= deadline:
                return found
            time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))

    def streamed(self, kind: str) -> list[str]:
        """The symbols streamed in this kind now (exchange spelling), from the stream states."""
        prefix = snapshot_prefix(kind)
        try:
            keys = self.stream_states.streamed(prefix)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return sorted(symbol_of(k, prefix) for k in keys)

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


def _decode(key: str, pair: tuple[Any, Any], decode: Decode = servable) -> Any:
    try:
        return decode(*pair)
    except MalformedRecord as exc:
        logger.error("store: %s holds no valid record (%s)", key, exc)
        return None
