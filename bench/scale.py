"""Scale: ``--all`` on N simulated symbols at an aggregate rate; how fast, how big, how lossy.

    python -m bench.scale [--symbols 2000] [--rate 10] [--steady 20] [--repeats 3]

Starts a private redis-server, the simulator (the recorded 1,262 trading symbols plus synthetic
ones up to N, each updating ``rate`` times a second) and ``python -m messenger --all``. Reports the
seconds until every symbol is servable (its key is in Redis), then, over ``steady`` seconds of
steady state: the frames/s the simulator sent and the messenger read, the messenger's RSS and
CPU, and frames lost (sent by the exchange but never read: slow-consumer drops and backlog).
The baseline, in the same run on the same feed: a bare websocket-client reader subscribing the
same streams the same way, timed until each has sent a frame, with its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import frames_sent, medians, proc_stats, rounded, trading_symbols
from tests.processes import Messenger, RedisServer, Simulator, http, messenger_env, wait_until

FRAMES_TOTAL = re.compile(r"frames/s \((\d+) in all\)")


def read_frames(messenger: Messenger) -> int:
    """Frames the messenger has read, from its last status line."""
    totals = FRAMES_TOTAL.findall(messenger.log())
    return int(totals[-1]) if totals else 0


def baseline(sim: Simulator, symbols: int) -> dict[str, float]:
    """The bare reader on the same feed: seconds until every symbol has sent a frame, peak RSS."""
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    streams = [f"{s['symbol'].lower()}@bookTicker" for s in info["symbols"] if s["status"] == "TRADING"]
    argv = [sys.executable, "-m", "bench.baselines", "first", sim.ws_url, "60", *streams[:symbols]]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=90)
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["unseen"] == 0, doc
    return {"seconds_until_all_seen": doc["seconds_until_all_seen"], "rss_peak_mb": doc["rss_peak_mb"]}


def run_once(symbols: int, rate: float, steady_s: float) -> dict[str, Any]:
    """One measurement of the messenger and then of the baseline; returns the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server = RedisServer(logs)
        sim = Simulator(logs, "--rate", str(rate), *trading_symbols(symbols))
        processes: list[Any] = [redis_server, sim]
        try:
            redis_server.start()
            sim.start()
            client = redis_server.client()
            env = messenger_env(sim, redis_server.url, STATS_INTERVAL_S=1, LOG_LEVEL="INFO")
            messenger = Messenger(logs, env, "--all")
            processes.append(messenger)
            started = time.monotonic()
            messenger.start()
            wait_until(
                lambda: len(client.keys("transmute:bookticker:*")) >= symbols, 60, 0.05, what="every symbol"
            )
            servable_s = time.monotonic() - started
            assert messenger.proc is not None
            pid = messenger.proc.pid
            time.sleep(2.0)  # settle: seeds done, first stats lines out
            cpu0, _ = proc_stats(pid)
            sent0, _ = frames_sent(sim)
            read0 = read_frames(messenger)
            t0 = time.monotonic()
            rss_peak = 0
            while time.monotonic() - t0 < steady_s:
                rss_peak = max(rss_peak, proc_stats(pid)[1])
                time.sleep(0.5)
            elapsed = time.monotonic() - t0
            cpu1, rss = proc_stats(pid)
            sent1, _ = frames_sent(sim)
            read1 = read_frames(messenger)
            # Stop the market and let the messenger drain: every frame sent must have been read.
            sim.market(rate=0)
            time.sleep(2.5)
            sent_total, replies = frames_sent(sim)
            read_total = read_frames(messenger)
            state = sim.state()
            messenger.stop()
            sim.market(rate=rate)
            bare = baseline(sim, symbols)
            return {
                "bare_seconds_until_all_seen": round(bare["seconds_until_all_seen"], 2),
                "bare_rss_peak_mb": round(bare["rss_peak_mb"], 1),
                "symbols": symbols,
                "connections": len(state["sessions"]),
                "max_streams_per_connection": max(len(s["streams"]) for s in state["sessions"]),
                "seconds_until_all_servable": round(servable_s, 2),
                "frames_per_s_sent": round((sent1 - sent0) / elapsed),
                "frames_per_s_read": round((read1 - read0) / elapsed),
                "frames_sent_total": sent_total,
                "frames_lost": sent_total + replies - read_total,
                "messenger_rss_mb": round(rss / 2**20, 1),
                "messenger_rss_peak_mb": round(rss_peak / 2**20, 1),
                "messenger_cpu_percent_of_a_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
                "violations": len([v for s in state["sessions"] + state["closed"] for v in s["violations"]]),
                "rejected_connections": state["rejected_connections"],
            }
        finally:
            for process in reversed(processes):
                process.stop()


def run(symbols: int = 2000, rate: float = 10.0, steady_s: float = 20.0, repeats: int = 3) -> dict[str, Any]:
    """Medians over ``repeats`` runs (the worst for losses and limit violations)."""
    runs = [run_once(symbols, rate, steady_s) for _ in range(repeats)]
    row: dict[str, Any] = medians(runs)
    for worst in ("frames_lost", "violations", "rejected_connections"):
        row[worst] = max(r[worst] for r in runs)
    row["servable_ratio_to_bare"] = row["seconds_until_all_servable"] / row["bare_seconds_until_all_seen"]
    row["rss_ratio_to_bare"] = row["messenger_rss_peak_mb"] / row["bare_rss_peak_mb"]
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10.0, help="updates per second per symbol")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady state to measure")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(rounded(run(args.symbols, args.rate, args.steady, args.repeats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
