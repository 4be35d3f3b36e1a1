"""Candles' REST weight: what starting 1,000 kept series costs, and recovering them after a cut.

    python -m bench.kline_weight [--series 1000] [--interval 1m]

The messenger pins ``--series`` trading symbols of the simulator with ``--streams kline_<interval>``
(each a series: its stream's open candle and its kept closed candles). Started, it seeds each
series; once every series is caught up (its kept candles reach its stream's open candle) and REST
has gone quiet, the simulator's count of ``/api/v3/klines`` calls and their weight is the cost of
starting. Then, once the start's calls have left Binance's one-minute weight window (as in steady
state), every connection is dropped 1.5 s before a candle closes, and kept down by the reconnect
delay (2 to 4 s), so that every series misses that close; once every series is caught up again on
a new connection, the calls since the cut are the cost of recovering.

Calls are counted by the simulator (``/_sim/state``: ``rest_totals`` by path and the last
requests, polled and told apart by their parameters): ``seed`` (``limit=1``: the stream's current
candle, as every kind is seeded after a subscription), ``history`` (the last 1,000 candles),
``gap`` (``startTime``: the candles missed) and ``older`` (``endTime``). ``lost``: calls the
polling missed (0, or the counts by kind are short by that many).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import redis

from bench.stack import redis_and_simulator, rounded, running
from contract.keys import snapshot_key
from contract.klines import klines_key, row_times
from tests.processes import Messenger, Simulator, http, messenger_env, wait_until

KLINES = "/api/v3/klines"
KINDS = ("history", "seed", "gap", "older")
POLL_S = 0.2
QUIET_S = 2.0  # no candle call for this long: the phase is over
# Reconnect 2 to 4 s after the cut (the first delay is half to all of RECONNECT_MIN_MS).
RECONNECT_MIN_MS, RECONNECT_MAX_MS = 4000, 8000
# The cut comes this long before a candle closes (so the close falls within it) ...
CUT_LEAD_MS = 1500
# ... and once the start's calls have left the weight window (else the recovery would find the
# budget spent and wait a minute, which is not what a reconnect in steady state costs).
WINDOW_S = 61.0
CATCH_UP_S = 300.0
INTERVAL_MS = {"1s": 1_000, "1m": 60_000}


def call_kind(path: str) -> str:
    """What a ``/api/v3/klines`` call was for, from its parameters."""
    query = parse_qs(urlsplit(path).query)
    if "startTime" in query:
        return "gap"
    if "endTime" in query:
        return "older"
    return "seed" if query.get("limit") == ["1"] else "history"


class Calls:
    """The simulator's candle calls, polled on a thread: counts and weight by kind, since a mark."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.calls: Counter[str] = Counter()
        self.weight: Counter[str] = Counter()
        self.last_at = time.monotonic()
        self._seen: set[tuple[float, str]] = set()
        self._totals = {"calls": 0, "weight": 0}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @contextmanager
    def polling(self) -> Iterator[None]:
        """Poll until the block ends."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        """Take the requests made since the last poll."""
        state = self.sim.state()
        with self._lock:
            for request in state["rest_requests"]:
                key = (request["at"], request["path"])
                if request["path"].startswith(KLINES) and key not in self._seen:
                    self._seen.add(key)
                    kind = call_kind(request["path"])
                    self.calls[kind] += 1
                    self.weight[kind] += request.get("weight", 0)
                    self.last_at = time.monotonic()
            self._totals = state.get("rest_totals", {}).get(KLINES, self._totals)

    def settle(self, timeout_s: float) -> None:
        """Wait until no candle call came for QUIET_S."""
        wait_until(lambda: time.monotonic() - self.last_at > QUIET_S, timeout_s, what="REST to go quiet")

    def take(self) -> dict[str, Any]:
        """Calls and weight by kind since the last take, and any the polling missed overall."""
        self.poll()
        with self._lock:
            row = {
                "calls": sum(self.calls.values()),
                "weight": sum(self.weight.values()),
                **{f"{k}_calls": n for k, n in sorted(self.calls.items())},
                "lost": self._totals["calls"] - len(self._seen),
            }
            self.calls.clear()
            self.weight.clear()
        return row


def trading(sim: Simulator, n: int) -> list[str]:
    """The first ``n`` trading symbols of the simulator's exchangeInfo."""
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo", timeout_s=30)
    names = sorted(s["symbol"] for s in info["symbols"] if s["status"] == "TRADING")
    assert len(names) >= n, f"the simulator trades {len(names)} symbols, not {n}"
    return names[:n]


def caught_up(client: redis.Redis, symbols: list[str], interval: str, not_vouched_by: str = "") -> int:
    """How many series are caught up: kept candles end where the stream's open candle begins, and
    the open candle is vouched for by a connection (other than ``not_vouched_by``'s)."""
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.zrange(klines_key(interval, symbol), -1, -1)
        pipe.get(snapshot_key(f"kline_{interval}", symbol))
    replies = pipe.execute()
    done = 0
    for last, raw in zip(replies[::2], replies[1::2], strict=True):
        if not last or raw is None:
            continue
        record = orjson.loads(raw)
        if not_vouched_by and record["voucher"] == not_vouched_by:
            continue
        last_open, last_close = row_times(last[0])
        if record["open_time"] == last_close + 1 or (record["closed"] and record["open_time"] == last_open):
            done += 1
    return done


def all_caught_up(
    client: redis.Redis, symbols: list[str], interval: str, calls: Calls, not_vouched_by: str = ""
) -> None:
    """Wait until every series is caught up; at the deadline, fail saying how far it got."""
    deadline = time.monotonic() + CATCH_UP_S
    while (done := caught_up(client, symbols, interval, not_vouched_by)) < len(symbols):
        if time.monotonic() > deadline:
            raise AssertionError(f"{done} of {len(symbols)} series caught up after {CATCH_UP_S:.0f} s; "
                                 f"candle calls so far: {dict(calls.calls)}")  # fmt: skip
        time.sleep(0.5)


def wait_for_cut(last_call: float, interval_ms: int) -> None:
    """Sleep until the start's calls have left Binance's one-minute weight window, and then until
    the moment a cut lasting the reconnect delay (2 to 4 s) spans a candle's close."""
    time.sleep(max(0.0, last_call + WINDOW_S - time.monotonic()))
    if interval_ms < 2 * CUT_LEAD_MS:
        return  # a candle closes within any cut
    phase = time.time() * 1000 % interval_ms
    time.sleep(((interval_ms - CUT_LEAD_MS - phase) % interval_ms) / 1000)


def run(series: int = 1000, interval: str = "1m") -> dict[str, Any]:
    """Start ``series`` series, cut every connection, and count the calls of each phase."""
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server, sim = redis_and_simulator(logs)
        with running(redis_server, sim):
            symbols = trading(sim, series)
            client = redis_server.client()
            env = messenger_env(sim, redis_server.url, LOG_LEVEL="WARNING", RECONNECT_MIN_MS=RECONNECT_MIN_MS,
                                RECONNECT_MAX_MS=RECONNECT_MAX_MS)  # fmt: skip
            messenger = Messenger(logs, env, *symbols, "--streams", f"kline_{interval}")
            calls = Calls(sim)
            with running(messenger), calls.polling():
                began = time.monotonic()
                all_caught_up(client, symbols, interval, calls)
                start_s = time.monotonic() - began
                calls.settle(60)
                start = calls.take()
                old = orjson.loads(client.get(snapshot_key(f"kline_{interval}", symbols[0])) or b"{}")
                wait_for_cut(calls.last_at, INTERVAL_MS[interval])
                cut = time.monotonic()
                connections = len(sim.fault("drop")["sessions"])
                all_caught_up(client, symbols, interval, calls, old["voucher"])
                recover_s = time.monotonic() - cut
                calls.settle(60)
                recover = calls.take()
    row: dict[str, Any] = {"series": series, "interval": interval, "start_s": start_s, "recover_s": recover_s,
                           "connections_cut": connections}  # fmt: skip
    row.update({f"start_{k}": v for k, v in start.items()})
    row.update({f"recover_{k}": v for k, v in recover.items()})
    row["start_weight_per_series"] = start["weight"] / series
    row["recover_weight_per_series"] = recover["weight"] / series
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.kline_weight", description=__doc__)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--interval", default="1m", choices=sorted(INTERVAL_MS))
    args = parser.parse_args(argv)
    print(json.dumps(rounded(run(args.series, args.interval))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
