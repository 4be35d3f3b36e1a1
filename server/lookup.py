"""The current value of a stream, or why there is none: shared by every API of the server.

Each API (ours, the Binance-compatible one, live push) turns the exceptions below, and
server.admission's Refused, into its own error shape.
"""

from __future__ import annotations

import time
from typing import Any

from contract.keys import LIVE
from contract.servable import servable
from server import admission
from server.store import Decode, SnapshotStore, StoreUnavailable

TRADING = "TRADING"


class NoValue(Exception):
    """No current value can be served; the message says why, for the user, ``reason`` in a word
    (for metrics)."""

    reason = "no_value"


class Unavailable(NoValue):
    """Try again shortly: Redis is down, the symbol list is not loaded, or a stream is starting."""

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownSymbol(NoValue):
    """The exchange lists no such symbol."""

    def __init__(self, symbol: str, suggestion: str | None) -> None:
        hint = f" Did you mean {suggestion}?" if suggestion else ""
        super().__init__(f"Unknown symbol {symbol}.{hint}")
        self.symbol = symbol
        self.suggestion = suggestion


class NotTrading(NoValue):
    """The symbol is listed but does not trade now."""

    def __init__(self, symbol: str, status: str) -> None:
        super().__init__(f"{symbol} is not trading (status {status}).")
        self.status = status


class Stale(NoValue):
    """The stream is carried but its value cannot be vouched for (recently enough)."""

    reason = "not_vouched"


def with_age(record: dict[str, Any], symbol: str, max_age_ms: int | None) -> dict[str, Any]:
    """The record with its ``age_ms``; Stale if it was confirmed longer ago than ``max_age_ms``."""
    age_ms = max(0, int(time.time() * 1000) - record["as_of"])
    if max_age_ms is not None and age_ms > max_age_ms:
        raise Stale(f"{symbol} was last confirmed current {age_ms} ms ago, over max_age_ms={max_age_ms}.")
    record["age_ms"] = age_ms
    return record


def current(
    store: SnapshotStore, kind: str, symbols: list[str], max_age_ms: int | None, wait_s: float
) -> list[dict[str, Any]]:
    """The current records of ``symbols`` (one kind's key segment), read in one round trip.

    Symbols nobody streams yet are asked for, and the call waits up to ``wait_s`` for their
    first values. Raises a NoValue if any symbol has no current value.
    """
    records = fetch(store, kind, symbols, wait_s)
    return [with_age(r, s, max_age_ms) for s, r in zip(symbols, records, strict=True)]


def fetch(
    store: SnapshotStore,
    kind: str,
    symbols: list[str],
    wait_s: float,
    decode: Decode = servable,
    first: list[Any] | None = None,
) -> list[Any]:
    """What ``current`` does, each record as ``decode`` serves it and without its age; ``first``:
    the first read's records, when the caller read them itself (None where there was none)."""
    try:
        records = first if first is not None else store.snapshots(kind, symbols, decode=decode)
        missing = [s for s, r in zip(symbols, records, strict=True) if r is None]
        if missing:
            arrived = _explain(store, kind, missing, decode)
            still = [s for s in missing if s not in arrived]
            found = store.wait(kind, still, wait_s, decode) if still else {}
            found.update(arrived)
            records = [r if r is not None else found.get(s) for s, r in zip(symbols, records, strict=True)]
    except StoreUnavailable:
        raise Unavailable("Data store unavailable; try again shortly.", "redis") from None
    late = [s for s, r in zip(symbols, records, strict=True) if r is None]
    if late:
        raise Unavailable(
            f"{', '.join(late)} {'is' if len(late) == 1 else 'are'} being subscribed; try again in a moment.",
            "subscribing",
        )
    return records


def _explain(
    store: SnapshotStore, kind: str, symbols: list[str], decode: Decode = servable
) -> dict[str, Any]:
    """Raise why these have no value, or ask for the ones nobody streams yet; returns the values
    that arrived in the meantime."""
    lookups = store.lookup(kind, symbols, decode)
    arrived = {s: found.record for s, found in zip(symbols, lookups, strict=True) if found.record is not None}
    lookups = [found for found in lookups if found.record is None]
    symbols = [s for s in symbols if s not in arrived]
    if not lookups:
        return arrived
    # A stream that had values and has none now is stale, whatever else is or is not known.
    stale = [s for s, found in zip(symbols, lookups, strict=True) if found.stream_state == LIVE]
    if stale:
        listed = ", ".join(stale)
        raise Stale(f"No current data for {listed}: its stream is not live, or it is not streamed.")
    if not lookups[0].catalog_loaded:
        raise Unavailable("The symbol list is not loaded yet; try again shortly.", "symbol_list")
    for symbol, found in zip(symbols, lookups, strict=True):
        if found.status is None:
            raise UnknownSymbol(symbol, store.suggest(symbol))
        if found.status != TRADING:
            raise NotTrading(symbol, found.status)
    # Raises admission.Refused (429) rather than start streams over a limit.
    admission.ask(
        store, kind, [s for s, found in zip(symbols, lookups, strict=True) if found.stream_state is None]
    )
    return arrived
