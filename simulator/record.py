"""What the simulated exchange published, kept for an oracle that judges what clients were served.

Two halves:

- ``Recorder`` runs in the simulator (``--record``): a bounded log of every market-data frame
  handed to subscribers (the stream's name, the raw payload, when), every REST answer a client
  can seed a stream from (the same value in its stream's shape, under ``rest:<stream>``), and a
  marker (no payload) when a stream loses its last subscriber. ``GET /_sim/record?since=N``
  reads it with a cursor; what fell off the bounded log before it was read is counted as lost.
- ``Timeline`` runs in a test: it replays those entries into, per stream, the intervals during
  which each value was the exchange's current one, and judges a value a client was served:
  never sent, current, or superseded how long ago.

When a value stops being current:

- a newer value of its stream is published (to anyone), or answered over REST; for streams
  ordered by an id (``u``, trade ids, ``lastUpdateId``) a publication with an older id (Binance
  resending something old) changes nothing;
- its stream loses its last subscriber. Binance's market moves on whether anyone listens or not;
  the simulator only moves and publishes what is subscribed, so once nobody is subscribed it can
  no longer say what the value is, and the last one it published counts as superseded then.

A value is compared by what identifies it in every form a client can get it in (the stream
payload and the REST answer of the same moment), never by the event time ``E``, which moves on
with every periodic push of an unchanged value.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

REST_PREFIX = "rest:"
DEFAULT_LIMIT = 100_000
DUMP_LIMIT = 50_000

# -- the simulator's half --------------------------------------------------------------


class Recorder:
    """A bounded, append-only log of what the exchange published; read with a cursor."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._log: deque[tuple[float, str, bytes | None]] = deque(maxlen=limit)
        self._appended = 0  # entries ever appended: the cursor after the newest one

    def sent(self, stream: str, payload: bytes) -> None:
        """A frame of ``stream`` was handed to its subscribers (called on the hot path)."""
        self._log.append((time.time(), stream, payload))
        self._appended += 1

    def answered(self, stream: str, value: Any) -> None:
        """A REST answer carried ``value`` (in ``stream``'s payload shape: a dict, or its JSON)."""
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        self._log.append((time.time(), REST_PREFIX + stream, payload))
        self._appended += 1

    def left(self, stream: str) -> None:
        """``stream`` lost its last subscriber."""
        self._log.append((time.time(), stream, None))
        self._appended += 1

    def dump(self, since: int, limit: int = DUMP_LIMIT) -> bytes:
        """Entries after cursor ``since``, oldest first, as JSON:
        ``{"next": N, "lost": n, "entries": [[epoch_ms, stream, payload or null], ...]}``.

        ``next`` is the cursor to pass next time; ``lost`` counts entries after ``since`` that
        fell off the log before this read.
        """
        first = self._appended - len(self._log)  # cursor before the oldest entry kept
        since = max(0, min(since, self._appended))
        lost = max(0, first - since)
        start = max(since, first) - first
        taken = list(itertools.islice(self._log, start, start + max(0, limit)))
        parts = [
            b"[%d,%s,%s]" % (round(at * 1000), orjson.dumps(stream), b"null" if payload is None else payload)
            for at, stream, payload in taken
        ]
        return b'{"next":%d,"lost":%d,"entries":[%s]}' % (
            first + start + len(taken),
            lost,
            b",".join(parts),
        )


# REST answers in the shape of their stream's payload, for ``Recorder.answered`` (``/api/v3/aggTrades``
# and ``/api/v3/depth`` already have it).


def trade_value(entry: dict[str, Any]) -> dict[str, Any]:
    """One ``/api/v3/trades`` entry as an ``@trade`` payload."""
    return {"t": entry["id"], "p": entry["price"], "q": entry["qty"], "T": entry["time"],
            "m": entry["isBuyerMaker"]}  # fmt: skip


def kline_value(row: list[Any]) -> dict[str, Any]:
    """One ``/api/v3/klines`` row as an ``@kline_<interval>`` payload."""
    return {"k": {"t": row[0], "o": row[1], "h": row[2], "l": row[3], "c": row[4], "v": row[5], "n": row[8]}}


def avg_price_value(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``/api/v3/avgPrice`` answer as an ``@avgPrice`` payload."""
    return {"w": doc["price"], "T": doc["closeTime"]}


def ticker_value(doc: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A ``/api/v3/ticker/24hr`` entry as an ``@ticker`` payload (``names``: REST name -> letter)."""
    return {letter: doc[name] for name, letter in names.items()}


# -- the test's half -------------------------------------------------------------------

Order = int | None
Content = tuple[Any, ...]


def _top(levels: list[list[str]]) -> tuple[str, ...]:
    return tuple(levels[0]) if levels else ()


# Per kind: what orders its values (None: nothing), and what identifies a value.
ORDERED = frozenset({"bookTicker", "trade", "aggTrade", "depth"})
VALUES: dict[str, Callable[[Any], tuple[Order, Content]]] = {
    "bookTicker": lambda d: (d["u"], (d["b"], d["B"], d["a"], d["A"])),
    "trade": lambda d: (d["t"], (d["p"], d["q"], d["T"])),
    "aggTrade": lambda d: (d["a"], (d["p"], d["q"], d["T"])),
    "depth": lambda d: (d["lastUpdateId"], (_top(d["bids"]), _top(d["asks"]))),
    "kline": lambda d: (None, tuple(d["k"][x] for x in "tohlcvn")),
    "miniTicker": lambda d: (None, tuple(d[x] for x in "cohlvq")),
    "ticker": lambda d: (None, tuple(d[x] for x in "cohlvqbBaAn")),
    "avgPrice": lambda d: (None, (d["w"], d["T"])),
    "windowTicker": lambda d: (None, tuple(d[x] for x in "cohlvqn")),
}
DEPTH_STREAMS = ("depth5", "depth10", "depth20")


def family(kind: str) -> str:
    """The key of ``VALUES`` for a stream kind: ``kline_1m`` -> ``kline``, ``depth5@100ms`` -> ``depth``,
    ``ticker_1h`` -> ``windowTicker``."""
    if kind.startswith("kline_"):
        return "kline"
    if kind.startswith("depth"):
        return "depth"
    if kind.startswith("ticker_"):
        return "windowTicker"
    return kind


def stream_key(stream: str) -> str:
    """A stream's name without a depth's update speed: ``btcusdt@depth5@100ms`` -> ``btcusdt@depth5``."""
    symbol, _, kind = stream.partition("@")
    if kind.startswith("depth"):
        return f"{symbol}@{kind.partition('@')[0]}"
    return stream


def _targets(stream: str) -> list[str]:
    """The streams an entry tells about: itself, or for a REST answer every stream it can seed."""
    if not stream.startswith(REST_PREFIX):
        return [stream_key(stream)]
    symbol, _, kind = stream[len(REST_PREFIX) :].partition("@")
    if kind == "depth":
        return [f"{symbol}@{d}" for d in DEPTH_STREAMS]
    if kind == "ticker":
        return [f"{symbol}@ticker", f"{symbol}@miniTicker"]
    return [f"{symbol}@{kind}"]


@dataclass(slots=True)
class Interval:
    """A stretch of time during which one value was its stream's current one."""

    order: Order
    start_ms: int
    end_ms: int | None = None  # None: current still


@dataclass(slots=True)
class _Stream:
    ordered: bool
    current: tuple[Order, Content] | None = None
    open: Interval | None = None
    by_content: dict[Content, list[Interval]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a value served between two instants compares with what the exchange had published."""

    sent: bool  # published at all before it was served
    published_ms: int | None = None  # the start of its last stretch as the current value
    superseded_ms: int | None = None  # the end of that stretch; None: still current when served
    stale_ms: int = 0  # how long it had stopped being current when the request was sent


class Timeline:
    """Every value each stream took, from a recorder's entries, and verdicts on served values."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def add(self, entries: Iterable[list[Any]]) -> None:
        """Replay entries (``[epoch_ms, stream, payload or None]``, in the order recorded)."""
        for at_ms, stream, payload in entries:
            for key in _targets(stream):
                if payload is None:
                    self._left(key, at_ms)
                else:
                    self._published(key, at_ms, payload)

    def _stream(self, key: str) -> _Stream:
        state = self._streams.get(key)
        if state is None:
            state = self._streams[key] = _Stream(ordered=family(key.partition("@")[2]) in ORDERED)
        return state

    def _published(self, key: str, at_ms: int, payload: Any) -> None:
        kind = family(key.partition("@")[2])
        order, content = VALUES[kind](payload)
        state = self._stream(key)
        current = state.current
        if current is not None and state.open is not None:
            if current == (order, content):
                return  # the same value again (a periodic push, a REST answer of it)
            if state.ordered and order is not None and current[0] is not None and order < current[0]:
                # Something older resent: it never was current, but it was sent.
                state.by_content.setdefault(content, []).append(Interval(order, at_ms, at_ms))
                return
            state.open.end_ms = at_ms
        interval = Interval(order, at_ms)
        state.by_content.setdefault(content, []).append(interval)
        state.current, state.open = (order, content), interval

    def _left(self, key: str, at_ms: int) -> None:
        state = self._streams.get(key)
        if state is not None and state.open is not None:
            state.open.end_ms = at_ms
            state.open = None
            state.current = None

    def judge(self, stream: str, order: Order, content: Content, asked_ms: int, answered_ms: int) -> Verdict:
        """The verdict on a value served for ``stream`` to a request sent at ``asked_ms`` and
        answered at ``answered_ms`` (``order`` None: match by content only).

        The value may have been read anywhere in between: it is fresh if it was current at any
        instant of that span, and otherwise stale by how long before ``asked_ms`` it stopped.
        """
        state = self._streams.get(stream_key(stream))
        found = [] if state is None else state.by_content.get(content, [])
        found = [i for i in found if i.start_ms <= answered_ms and (order is None or i.order == order)]
        if not found:
            return Verdict(sent=False)
        latest = max(found, key=lambda i: (i.end_ms is None, i.end_ms or 0))
        if latest.end_ms is None or latest.end_ms >= asked_ms:
            return Verdict(True, latest.start_ms, latest.end_ms)
        return Verdict(True, latest.start_ms, latest.end_ms, asked_ms - latest.end_ms)
