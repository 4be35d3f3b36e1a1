"""Backfills: the server asks the messenger for history older than what Redis holds.

The server only reads Redis; when a request reaches before a kept series (candles, trades,
aggregate trades), it adds a request to BACKFILL_KEY (scored by when it asked, ZADD NX so that
concurrent asks for the same range share one) and publishes on BACKFILL_CHANNEL. The messenger
takes each request, fetches what is missing over REST (one call per 1,000 items, within its
weight budget), puts it in front of the series and removes the request. The server waits up to
DEMAND_WAIT_MS for the series to reach back far enough, else answers 503 with Retry-After.

A request is ``<series>:<SYMBOL>:<reach>``: the series' kind segment (``kline_1m``, ``aggtrade``,
``trade``), the symbol, and how far back it must reach (an open time in epoch ms for candles, an
id for trades), e.g. ``kline_1h:BTCUSDT:1700000000000``.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import redis

from contract.keys import CONTROL_PREFIX
from contract.redis_client import publish

BACKFILL_KEY = CONTROL_PREFIX + "backfill"
BACKFILL_CHANNEL = CONTROL_PREFIX + "backfill"
# A request not served in this long is dropped: its asker has given up (DEMAND_WAIT_MS, 3 s by
# default), and a later ask makes a new one; so a flood of asks stops costing REST calls soon after.
BACKFILL_EXPIRY_MS = 15_000


class Backfill(NamedTuple):
    """One request: reach ``series`` of ``symbol`` back to ``reach`` (inclusive)."""

    series: str
    symbol: str
    reach: int

    def member(self) -> str:
        """The member of BACKFILL_KEY naming this request."""
        return f"{self.series}:{self.symbol}:{self.reach}"

    @classmethod
    def parse(cls, member: str) -> Backfill | None:
        """The request a member names, or None if it names none."""
        series, _, rest = member.partition(":")
        symbol, _, reach = rest.partition(":")
        if not series or not symbol or not reach.lstrip("-").isdigit():
            return None
        return cls(series, symbol, int(reach))


def ask(client: redis.Redis, request: Backfill) -> None:
    """Ask the messenger for a backfill: concurrent asks for the same one stay one request."""
    pipe = client.pipeline(transaction=False)
    pipe.zadd(BACKFILL_KEY, {request.member(): int(time.time() * 1000)}, nx=True)
    publish(pipe, BACKFILL_CHANNEL, request.member())
    pipe.execute()
