"""Every trading symbol of a kind at once: what a Binance ticker list without ``symbol`` answers.

Binance answers ``/api/v3/ticker/bookTicker`` (``/price``, ``/24hr``) with no symbol with every
symbol it lists as trading; so does this, from the per-symbol streams of one kind
(contract.kinds.MARKET_KINDS), or not at all:

- One Redis round trip reads the symbol list (``transmute:symbols``), every trading symbol's
  record through the read rule (contract.servable), the stream state of those with none, and
  refreshes the whole-market demand (``<kind>:*`` in ``transmute:demand``) if it is current.
- Unless it is current, the whole-market demand is registered (server.admission: it counts as one
  stream against ``DEMAND_MAX_STREAMS`` and one of the client's new streams); the messenger
  expands it over the trading symbols, and drops it ``DEMAND_IDLE_S`` after the last request.
- Complete (every trading symbol has a vouched value): the list, in symbol order. While streams are
  starting the request waits up to ``DEMAND_WAIT_MS`` for the list to complete; a stream that had
  values and has none now (a dead connection, the messenger gone) fails it at once. Never a
  partial list: 503 -1001 with ``Retry-After`` until it is whole.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import current_app

from contract import kinds
from contract.keys import (
    ALL_SYMBOLS,
    DEMAND_KEY,
    LIVE,
    SYMBOLS_KEY,
    market_demand_member,
    snapshot_key,
)
from contract.members import StreamStates
from contract.records import MalformedRecord
from contract.servable import CurrentReader, pairs, servable
from server import admission
from server.store import SnapshotStore, StoreUnavailable

TRADING = "TRADING"
EXTENSION = "transmute.whole_market"
# While the whole market's streams start, the missing values are looked for this often.
WAIT_POLL_S = 0.1

# KEYS: the symbol list, the demand set (control keys: one slot). ARGV: the demand member, the
# start of the idle window (ms), now (ms). Returns {demand current (0/1), symbol list loaded (0/1),
# then every trading symbol}. The records are read after it (one script a bucket), and the stream
# states of those missing after them (a record is written before its stream is said live).
SCRIPT = """
local member = ARGV[1]
local score = redis.call('ZSCORE', KEYS[2], member)
local asked = 0
if score and tonumber(score) >= tonumber(ARGV[2]) then
  asked = 1
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], member)
end
local statuses = redis.call('HGETALL', KEYS[1])
local out = {asked, 0}
if #statuses > 0 then out[2] = 1 end
for i = 1, #statuses, 2 do
  if statuses[i + 1] == 'TRADING' then out[#out + 1] = statuses[i] end
end
return out
"""


class Incomplete(Exception):
    """Not every trading symbol has a current value; the message says why, for the user."""

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


@dataclass
class MarketRead:
    """One read of a kind's whole market."""

    asked: bool  # the whole-market demand is current (and was refreshed)
    loaded: bool  # the symbol list is in Redis
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # trading symbol -> record
    missing: dict[str, str | None] = field(default_factory=dict)  # trading symbol -> stream state


class WholeMarket:
    """Reads and asks for the whole market of a kind (its key segment)."""

    def __init__(self, client: redis.Redis, idle_s: float) -> None:
        self._script = client.register_script(SCRIPT)
        self._current = CurrentReader(client)
        self._states = StreamStates(client)
        self.idle_ms = int(idle_s * 1000)

    def read(self, kind: str) -> MarketRead:
        """Every trading symbol's current record of ``kind``: the symbol list and the demand,
        then the records (a script a bucket), then the stream states of those missing."""
        now_ms = int(time.time() * 1000)
        since_ms = now_ms - self.idle_ms
        args: list[str | int] = [market_demand_member(kind), since_ms, now_ms]
        try:
            flat: list[Any] = self._script(keys=[SYMBOLS_KEY, DEMAND_KEY], args=args)
            symbols = [_text(s) for s in flat[2:]]
            keys = [snapshot_key(kind, s) for s in symbols]
            found = pairs(self._current(keys)) if keys else []
            out = MarketRead(bool(flat[0]), bool(flat[1]))
            missing = []
            for symbol, key, (raw, heard) in zip(symbols, keys, found, strict=True):
                record = _decode(raw, heard)
                if record is None:
                    missing.append((symbol, key))
                else:
                    out.records[symbol] = record
            if missing:
                # The states, then the missing records again: a messenger writes a stream's first
                # value before it says the stream is live, so one still missing under a live
                # state really has no current value (not one that came in between).
                states = self._states.states([key for _, key in missing])
                again = pairs(self._current([key for _, key in missing]))
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if missing:
            for (symbol, _), state, (raw, heard) in zip(missing, states, again, strict=True):
                record = _decode(raw, heard)
                if record is None:
                    out.missing[symbol] = _text(state) if state is not None else None
                else:
                    out.records[symbol] = record
        return out

    def arrived(self, kind: str, symbols: Sequence[str]) -> int:
        """How many of ``symbols`` have a current record now (one round trip)."""
        keys = [snapshot_key(kind, s) for s in symbols]
        try:
            flat = self._current(keys)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return sum(1 for pair in pairs(flat) if _decode(*pair) is not None)


def records(store: SnapshotStore, kind: str, idle_s: float, wait_s: float) -> list[dict[str, Any]]:
    """Every trading symbol's current record of ``kind`` (Binance's name), in symbol order.

    Raises Incomplete (503), admission.Refused (429) or StoreUnavailable.
    """
    key_kind = kinds.key_kind(kind)
    market: WholeMarket | None = current_app.extensions.get(EXTENSION)
    if market is None:
        market = current_app.extensions[EXTENSION] = WholeMarket(store.client, idle_s)
    read = market.read(key_kind)
    if not read.loaded:
        raise Incomplete("The symbol list is not loaded yet; try again shortly.")
    if not read.asked:
        try:
            admission.ask(store, key_kind, [ALL_SYMBOLS])
        except admission.Refused:
            # Whole already (pinned with --all): served, though nothing more keeps it streamed.
            if read.missing:
                raise
    if read.missing:
        stale = [s for s, state in read.missing.items() if state == LIVE]
        if stale:
            raise Incomplete(_why(kind, read, "their streams are not live"), stale=True)
        read = _wait(market, key_kind, read, wait_s)
        if read.missing:
            raise Incomplete(_why(kind, read, "the whole market's streams are starting"))
    return [read.records[s] for s in sorted(read.records)]


def _wait(market: WholeMarket, kind: str, read: MarketRead, wait_s: float) -> MarketRead:
    """Look for the missing values until they are all there or ``wait_s`` is over, then read again."""
    deadline = time.monotonic() + wait_s
    missing = list(read.missing)
    while time.monotonic() < deadline:
        time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
        if market.arrived(kind, missing) == len(missing):
            break
    return market.read(kind)


def _why(kind: str, read: MarketRead, because: str) -> str:
    missing = sorted(read.missing)
    some = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    total = len(read.missing) + len(read.records)
    return (f"{len(missing)} of {total} trading symbols have no current {kind} ({some}): {because}. "
            "A list is answered only whole; try again shortly.")  # fmt: skip


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: Any, heard: Any) -> dict[str, Any] | None:
    try:
        return servable(raw, heard)
    except MalformedRecord:
        return None
