"""The oracle: values clients were served, judged against what the simulator says it sent.

A simulator started with ``--record`` keeps every value it publishes (simulator/record.py);
``Published`` reads that record with a cursor into a ``record.Timeline``, and ``Judgement`` gives
each served value its verdict: a 200 must carry a value the exchange published, and one that was
not superseded longer ago than the test's bound when the request was sent. A test derives its
bound from the README's freshness table for the faults it injects (``SNAPSHOT_TTL_MS`` for a
killed messenger, ``LIVENESS_TIMEOUT_MS + SNAPSHOT_TTL_MS`` for the longest row) plus ``SLACK_MS``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from simulator import record
from tests.processes import Simulator, http

# What one machine adds to a bound: every process shares two cores, a superseding frame is
# stamped when the exchange queues it, not when it leaves, and a staleness is measured from when
# the request was sent (before the value was read: never overstated).
SLACK_MS = 1000

# Our record's fields, by the letters of the stream payload ``record.VALUES`` reads, per family.
MINI = {"c": "close", "o": "open", "h": "high", "l": "low", "v": "volume", "q": "quote_volume"}
LETTERS: dict[str, dict[str, str]] = {
    "bookTicker": {"u": "update_id", "b": "bid_price", "B": "bid_quantity", "a": "ask_price",
                   "A": "ask_quantity"},
    "trade": {"t": "trade_id", "p": "price", "q": "quantity", "T": "trade_time"},
    "aggTrade": {"a": "agg_trade_id", "p": "price", "q": "quantity", "T": "trade_time"},
    "depth": {"lastUpdateId": "last_update_id", "bids": "bids", "asks": "asks"},
    "kline": {"t": "open_time", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume",
              "n": "trades"},
    "miniTicker": MINI,
    "ticker": {**MINI, "b": "bid_price", "B": "bid_quantity", "a": "ask_price", "A": "ask_quantity",
               "n": "trades"},
    "avgPrice": {"w": "price", "T": "last_trade_time"},
}  # fmt: skip

Stream = tuple[str, str]  # (SYMBOL, kind)
Value = tuple[Any, record.Content]  # (order, content), as ``record.VALUES`` gives them


def stream_name(stream: Stream) -> str:
    """The exchange's name of a stream, as the record keys it."""
    return f"{stream[0].lower()}@{stream[1]}"


def served_value(kind: str, doc: dict[str, Any]) -> Value:
    """(order, content) of a served record, as ``record.VALUES`` gives them for a payload."""
    family = record.family(kind)
    payload = {letter: doc[name] for letter, name in LETTERS[family].items()}
    return record.VALUES[family]({"k": payload} if family == "kline" else payload)


class Published:
    """What the exchange published, read from the simulator's record into a timeline."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.timeline = record.Timeline()
        self.recorded = 0  # the cursor: entries read so far
        self.lost = 0  # entries that fell off the simulator's bounded log before they were read

    def pull(self) -> None:
        """Everything the simulator recorded since the last pull, into the timeline."""
        while True:
            url = f"{self.sim.rest_url}/_sim/record?since={self.recorded}"
            status, _, dump = http("GET", url, timeout_s=30)
            if status != 200:
                return
            self.timeline.add(dump["entries"])
            self.lost += dump["lost"]
            self.recorded = dump["next"]
            if not dump["entries"]:
                return


@dataclasses.dataclass(slots=True)
class Judgement:
    """Verdicts on served values: which were never sent, which were stale beyond ``bound_ms``."""

    published: Published
    bound_ms: int
    origin_ms: int = 0  # times in the findings are given from this instant (epoch ms)
    never: list[str] = dataclasses.field(default_factory=list)
    stale: list[str] = dataclasses.field(default_factory=list)
    count: int = 0
    worst_ms: int = 0

    def judge(self, stream: Stream, value: Value, asked_ms: int, answered_ms: int, where: str = "") -> None:
        """Judge ``value``, served for ``stream`` to a request sent at ``asked_ms`` and answered at
        ``answered_ms`` (epoch ms); ``where`` heads a finding."""
        self.count += 1
        order, content = value
        name = stream_name(stream)
        verdict = self.published.timeline.judge(name, order, content, asked_ms, answered_ms)
        where = where or f"{name} at t+{(asked_ms - self.origin_ms) / 1000:.1f} s"
        if not verdict.sent:
            self.never.append(f"{where}: order {order} {content} was never published")
        elif verdict.stale_ms > self.bound_ms:
            self.stale.append(
                f"{where}: order {order} superseded {verdict.stale_ms} ms before "
                f"(published t+{((verdict.published_ms or 0) - self.origin_ms) / 1000:.1f} s)"
            )
        self.worst_ms = max(self.worst_ms, verdict.stale_ms)

    def summary(self) -> str:
        return (
            f"{self.count} values judged: {len(self.never)} never sent, {len(self.stale)} stale beyond "
            f"{self.bound_ms} ms; worst staleness {self.worst_ms} ms"
        )
