"""Ingest: what it costs to get frames from the exchange into Redis, beside peers, on the same feed.

    python -m bench.ingest [--symbols 1,100,2000] [--seconds 5] [--repeats 3] [--source feed|simulator]

A source floods bookTicker frames for N symbols as fast as the reader takes them: the cheap feed
(bench/feed.py, pre-encoded frames, a few percent of a core) or the simulator's flood (about a core
of its own, so a fast reader measures the simulator). Readers take turns on it, in every repeat
(bench/readers.py): a bare websocket-client receive loop (the ceiling), the proof of concept's
pattern, the messenger (on each ``WS_TRANSPORT``), a plain asyncio ``websockets`` +
``redis.asyncio`` peer and a ``picows`` + orjson + hiredis peer. For each, over a steady window: CPU
microseconds per frame (the reader's CPU time / frames it took), frames per second into Redis, the
source's and Redis's share of a core; then the flood stops and every symbol's latest value in Redis
must become exactly what the source sent last. For the messenger also frames lost (sent but never
read, counted exactly once it has drained), on each transport. Figures are medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.readers import READERS, Client, Quote, Reader, same
from bench.sources import FeedProcess, FeedSource, SimulatorSource, Source
from bench.stack import proc_stats, trading_symbols
from tests.processes import RedisServer, Simulator, http, wait_until

if TYPE_CHECKING:  # tests.cluster imports pytest (its fixture), which the benchmarks run without
    from tests.cluster import RedisClusterNodes

WARM_S = 1.0  # after every stream is subscribed and every key written: a steady flood
SETTLE_S = 60.0  # how long a reader may take to catch up once the flood stops
SATURATED = 0.9  # a source past this share of a core is the limit, not the reader


def symbols_for(sim: Simulator, n: int) -> list[str]:
    """N trading symbols of the simulator, BTCUSDT first."""
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    trading = sorted(s["symbol"] for s in info["symbols"] if s["status"] == "TRADING")
    trading.remove("BTCUSDT")
    return ["BTCUSDT", *trading][:n]


def messenger_frames(port: int) -> float:
    """Market-data frames the messenger has read, from its metrics."""
    text = http("GET", f"http://127.0.0.1:{port}/metrics")[2]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("transmute_messenger_frames_total{"))  # fmt: skip


def wrong_symbols(reader: Reader, client: Client, symbols: list[str], sent: dict[str, Quote]) -> set[str]:
    """Symbols whose latest value in Redis is not what the source sent last (or that it never sent)."""
    kept = reader.quotes(client, symbols)
    return {s for s in symbols if s not in sent or not same(kept[s], sent[s])}


def wrong_values(reader: Reader, client: Client, symbols: list[str], sent: dict[str, Quote]) -> int:
    """How many symbols' latest values in Redis are not what the source sent last."""
    return len(wrong_symbols(reader, client, symbols, sent))


def settle(reader: Reader, source: Source, client: Client, symbols: list[str]) -> tuple[int, float]:
    """With the flood stopped: (symbols still wrong after SETTLE_S, seconds until none was). A reader
    whose values expire on their own (the POC's, after 1 s) is judged by what each key held at
    some poll: its last values must all have landed, not all still be there at once."""
    sent, started = source.last(symbols), time.monotonic()
    wrong = wrong_symbols(reader, client, symbols, sent)
    while wrong and time.monotonic() - started < SETTLE_S:
        time.sleep(0.1)
        now_wrong = wrong_symbols(reader, client, symbols, sent)
        wrong = now_wrong if reader.lasting else wrong & now_wrong
    return len(wrong), time.monotonic() - started


def cpu_of(*pids: int) -> list[float]:
    """CPU seconds used so far by each process."""
    return [proc_stats(pid)[0] for pid in pids]


def redis_pids(redis_server: RedisServer | RedisClusterNodes) -> list[int]:
    """The processes of the redis-servers values land on: the one, or every primary of a cluster."""
    nodes = [redis_server] if isinstance(redis_server, RedisServer) else redis_server.primaries()
    pids = [node.proc.pid for node in nodes if node.proc is not None]
    assert len(pids) == len(nodes), f"not every redis-server of {redis_server} runs"
    return pids


def measure(
    reader: Reader, source: Source, symbols: list[str], seconds: float,
    redis_server: RedisServer | RedisClusterNodes, rest_url: str, logs: Path,
    settings: dict[str, str] | None = None,
) -> dict[str, float]:  # fmt: skip
    """One run of one reader: its steady window's figures, and whether its values came out right.
    ``redis_server`` is where the values land, flushed first and its CPU measured: one
    redis-server, or a cluster (every primary flushed, read and measured: bench/redis_modes.py);
    ``settings`` are the messenger's own beside it (REDIS_SENTINELS..., REDIS_CLUSTER)."""
    client = redis_server.client()
    client.flushall()  # a cluster client sends it to every primary
    source.flood(True)
    sent_before = source.frames_sent()
    process, metrics_port = reader.process(logs, source.ws_url, rest_url, redis_server.url, symbols, settings)
    process.start()
    try:
        keys = reader.keys(symbols) if reader.writes else []

        def ready() -> bool:  # EXISTS of keys in several slots: a cluster client asks each slot's node
            return source.streams() >= len(symbols) and (not keys or client.exists(*keys) == len(keys))

        wait_until(ready, 60, 0.05, what=f"{reader.name}: every stream subscribed and every key written")
        assert process.proc is not None
        pids = (process.proc.pid, source.pid, *redis_pids(redis_server))
        time.sleep(WARM_S)
        cpu0, frames0, t0 = cpu_of(*pids), source.frames_sent(), time.monotonic()
        time.sleep(seconds)
        cpu1, frames1, elapsed = cpu_of(*pids), source.frames_sent(), time.monotonic() - t0
        rss = proc_stats(pids[0])[1]
        source.flood(False)
        frames = max(1, frames1 - frames0)
        result = {
            "cpu_us_per_frame": 1e6 * (cpu1[0] - cpu0[0]) / frames,
            "frames_per_s": frames / elapsed,
            "source_cpu_share": (cpu1[1] - cpu0[1]) / elapsed,
            "redis_cpu_share": (sum(cpu1[2:]) - sum(cpu0[2:])) / elapsed,  # a cluster's: all its primaries'
            "rss_mb": rss / 2**20,
        }
        if reader.writes:
            result["wrong"], result["settle_s"] = settle(reader, source, client, symbols)
        if metrics_port is not None:
            result["frames_lost"] = (source.frames_sent() - sent_before) - messenger_frames(metrics_port)
        return result
    finally:
        process.stop()
        client.close()


def summarize(n: int, source: str, runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per reader and metric (worst case for what must be zero), and the targets' ratios."""
    row: dict[str, Any] = {"symbols": n, "source": source}
    for reader, samples in runs.items():
        row.update({f"{reader}_{metric}": value for metric, value in figures(samples).items()})
    m, c = row["messenger_frames_per_s"], row["ceiling_frames_per_s"]
    row["ratio_to_ceiling"] = m / c
    row["ratio_to_poc"] = m / row["poc_frames_per_s"]
    row["cpu_ratio_to_ceiling"] = row["messenger_cpu_us_per_frame"] / row["ceiling_cpu_us_per_frame"]
    row["cpu_ratio_to_asyncio"] = row["messenger_cpu_us_per_frame"] / row["asyncio_cpu_us_per_frame"]
    row["frames_lost_max"] = max(row.get(f"{m}_frames_lost", 0) for m in ("messenger", "messenger_picows"))
    return row


def figures(samples: list[dict[str, float]]) -> dict[str, Any]:
    """One reader's runs: the median of each metric, the worst of what must be zero, and whether
    the source was the limit in any of them."""
    row: dict[str, Any] = {}
    for metric in samples[0]:
        values = [s[metric] for s in samples]
        row[metric] = max(values) if metric in ("wrong", "frames_lost") else statistics.median(values)
    row["source_saturated"] = max(s["source_cpu_share"] for s in samples) >= SATURATED
    return row


def run(
    counts: list[int], seconds: float, repeats: int, source_name: str = "feed",
    readers: tuple[Reader, ...] = READERS, progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every count, every reader, ``repeats`` times, side by side in every repeat."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server = RedisServer(logs)
        # The simulator answers REST (exchangeInfo, seeds) in either case, and floods if it is the source.
        flood = ["--flood"] if source_name == "simulator" else []
        sim = Simulator(logs, *flood, *trading_symbols(max(counts)))
        feed = FeedProcess(logs, "--no-flood") if source_name == "feed" else None
        started: list[Any] = []
        try:
            for process in (redis_server, sim, feed):
                if process is not None:
                    process.start()
                    started.append(process)
            source: Source = FeedSource(feed) if feed is not None else SimulatorSource(sim)
            for n in counts:
                symbols = symbols_for(sim, n)
                runs: dict[str, list[dict[str, float]]] = {r.name: [] for r in readers}
                for _ in range(repeats):  # the machine's load hits every reader alike
                    for reader in readers:
                        runs[reader.name].append(
                            measure(reader, source, symbols, seconds, redis_server, sim.rest_url, logs)
                        )
                        if progress is not None:
                            progress(f"ingest: {n} symbols, {reader.name}: {rounded(runs[reader.name][-1])}")
                results.append(summarize(n, source.name, runs))
        finally:
            for process in reversed(started):
                process.stop()
    return results


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    """Floats to three decimals."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    """Run and print a JSON line per symbol count."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--symbols", default="1,100,2000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", choices=("feed", "simulator"), default="feed")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.symbols.split(",")]

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for row in run(counts, args.seconds, args.repeats, args.source, progress=say):
        print(json.dumps(rounded(row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
