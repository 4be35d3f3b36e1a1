"""Ingest: how fast frames get from the exchange into Redis, against two baselines on the same feed.

    python -m bench.ingest [--symbols 1,100,2000] [--seconds 5] [--repeats 3]

The simulator floods bookTicker frames for N symbols as fast as the reader takes them. Three
readers take turns on that feed: a bare websocket-client loop (the ceiling), the proof of
concept's pattern (a JSON document and a separate EXPIRE per frame), and the messenger. For
each: frames/s, CPU microseconds per frame, and, for the messenger, frames lost (sent by the
exchange but never read, counted exactly after the flood stops and the messenger drains).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import frames_sent, proc_stats, trading_symbols
from tests.processes import Messenger, RedisServer, Simulator, free_port, http, messenger_env, wait_until


def symbols_for(sim: Simulator, n: int) -> list[str]:
    """N trading symbols of the simulator, BTCUSDT first."""
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    trading = sorted(s["symbol"] for s in info["symbols"] if s["status"] == "TRADING")
    trading.remove("BTCUSDT")
    return ["BTCUSDT", *trading][:n]


def baseline(
    mode: str, sim: Simulator, symbols: list[str], seconds: float, redis_url: str
) -> dict[str, float]:
    """One run of a baseline reader in its own process."""
    streams = [f"{s.lower()}@bookTicker" for s in symbols]
    extra = [redis_url] if mode == "poc" else []
    argv = [sys.executable, "-m", "bench.baselines", mode, sim.ws_url, str(seconds), *extra, *streams]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "frames_per_s": doc["frames"] / doc["seconds"],
        "cpu_us_per_frame": 1e6 * doc["cpu_s"] / max(1, doc["frames"]),
    }


def messenger_frames(port: int) -> float:
    """Market-data frames the messenger has read, from its metrics."""
    text = http("GET", f"http://127.0.0.1:{port}/metrics")[2]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("transmute_messenger_frames_total{"))  # fmt: skip


def messenger_run(
    sim: Simulator, symbols: list[str], seconds: float, redis_server: RedisServer, logs: Path
) -> dict[str, float]:
    """One run of the messenger: frames/s into Redis, CPU per frame, frames lost."""
    port = free_port()
    env = messenger_env(sim, redis_server.url, METRICS_PORT=port, STATS_INTERVAL_S=60, LOG_LEVEL="WARNING")
    messenger = Messenger(logs, env, *symbols)
    client = redis_server.client()
    client.flushall()
    sent_before = frames_sent(sim)[0]
    messenger.start()
    try:
        wait_until(
            lambda: len(client.keys("transmute:bookticker:*")) >= len(symbols), 60, 0.05, what="every symbol"
        )
        assert messenger.proc is not None
        pid = messenger.proc.pid
        time.sleep(1.0)  # subscriptions and seeds done: steady flood
        cpu0, _ = proc_stats(pid)
        frames0 = messenger_frames(port)
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu1, rss = proc_stats(pid)
        frames1 = messenger_frames(port)
        sim.market(flood=False, rate=0)  # stop, let it drain, then count exactly
        time.sleep(1.5)
        lost = (frames_sent(sim)[0] - sent_before) - messenger_frames(port)
        sim.market(flood=True)
        return {
            "frames_per_s": (frames1 - frames0) / elapsed,
            "cpu_us_per_frame": 1e6 * (cpu1 - cpu0) / max(1.0, frames1 - frames0),
            "frames_lost": lost,
            "rss_mb": rss / 2**20,
        }
    finally:
        messenger.stop()


def run(counts: list[int], seconds: float, repeats: int) -> list[dict[str, Any]]:
    """Every count, every reader, ``repeats`` times; medians, and the messenger's ratios."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server = RedisServer(logs)
        sim = Simulator(logs, "--flood", *trading_symbols(max(counts)))
        redis_server.start()
        sim.start()
        try:
            for n in counts:
                symbols = symbols_for(sim, n)
                runs: dict[str, list[dict[str, float]]] = {"ceiling": [], "poc": [], "messenger": []}
                for _ in range(repeats):  # side by side in every repeat: the machine's load hits all alike
                    runs["ceiling"].append(baseline("ceiling", sim, symbols, seconds, redis_server.url))
                    runs["poc"].append(baseline("poc", sim, symbols, seconds, redis_server.url))
                    runs["messenger"].append(messenger_run(sim, symbols, seconds, redis_server, logs))
                row: dict[str, Any] = {"symbols": n}
                for reader, samples in runs.items():
                    for metric in samples[0]:
                        row[f"{reader}_{metric}"] = statistics.median(s[metric] for s in samples)
                row["ratio_to_ceiling"] = row["messenger_frames_per_s"] / row["ceiling_frames_per_s"]
                row["ratio_to_poc"] = row["messenger_frames_per_s"] / row["poc_frames_per_s"]
                row["frames_lost_max"] = max(s["frames_lost"] for s in runs["messenger"])
                results.append(row)
        finally:
            sim.stop()
            redis_server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run and print."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--symbols", default="1,100,2000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for row in run([int(n) for n in args.symbols.split(",")], args.seconds, args.repeats):
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
