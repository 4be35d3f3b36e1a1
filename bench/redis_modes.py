"""Redis modes: serving and ingest through each way of reaching Redis, side by side in one run.

    python -m bench.redis_modes [--seconds 10] [--ingest-seconds 5] [--symbols 100] [--repeats 3]

Each mode of contract/redis_client.py that works here gets a Redis of its own, started on free
ports with tests/processes.py's helpers, all of them up for the whole run:

- ``single``: one redis-server (``REDIS_URL``), the baseline;
- ``sentinel``: a primary, its replica and three ``redis-sentinel`` processes; the messenger and
  the server find the primary through the sentinels (``REDIS_SENTINELS``), and every write is
  replicated;
- ``cluster``: three primaries with a replica each (tests/cluster.py), ``REDIS_CLUSTER=1`` and
  ``REDIS_URL`` naming one node; the messenger and the server learn the others, and every write is
  replicated. Values are flushed, read back and their Redis CPU measured on every primary. On a
  machine that cannot run a cluster (no redis-cli, redis-server older than 7) the mode is reported
  as not run, with the reason and no figures.

Every repeat measures each mode in turn, in the opposite order to the repeat before:

- serving (as bench/serving.py): a messenger streams SNAPSHOTS_SYMBOLS symbols from the simulator
  and gunicorn runs as shipped (``server.gunicorn_conf``, its workers), both through the mode's
  Redis; wrk ``-c connections`` on ``POST /snapshot/BTC_USDT``, then on ``POST /snapshots`` of all
  of them (one MGET): requests/s, p50, p99, non-2xx answers. After each wrk run SAMPLES answers are
  compared with what Redis held just before or just after each (wrong answers);
- ingest (bench/ingest.measure, as the ingest benchmark runs it): the messenger on the cheap feed's
  flood for ``symbols`` symbols: CPU us per frame, frames/s into Redis, frames lost, and symbols
  whose last value in Redis is not the last one sent once the flood stops.

Figures are medians over the repeats (the worst or the sum for what must be zero), with each
mode's ratio to ``single``. Answers and values are checked against what Redis held through a
client of the mode's own kind (a cluster's reads each key from the primary serving its slot).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import ingest
from bench.readers import MESSENGER, Client, record_quote
from bench.serving import POST, load
from bench.sources import FeedProcess, FeedSource
from bench.stack import medians, rounded, running, trading_symbols
from contract.redis_client import CLUSTER, SENTINEL, SINGLE
from tests.processes import (
    Gunicorn,
    Messenger,
    RedisSentinel,
    RedisServer,
    Simulator,
    http,
    messenger_env,
    replica_ready,
    wait_until,
)

if TYPE_CHECKING:
    from tests.cluster import RedisClusterNodes

NOT_RUN = "not run: "  # a mode this machine cannot run, then why: in place of its figures
LABELS = {SINGLE: "single", SENTINEL: "Sentinel", CLUSTER: "Cluster"}
SERVICE = "transmute"
DOWN_AFTER_MS = 2000  # README "High availability": at least twice SNAPSHOT_TTL_MS (1,000 by default)
SNAPSHOTS_SYMBOLS = 10  # symbols streamed while serving, all asked for by each POST /snapshots
SAMPLES = 20  # answers compared with Redis after each wrk run
WARM_S = 2.0  # wrk's warm-up run before each measured one
# The figures compared with single's, mode by mode.
RATIOS = (
    *(
        f"{path}_{figure}"
        for path in ("snapshot", "snapshots")
        for figure in ("requests_per_s", "p50_ms", "p99_ms")
    ),
    "ingest_cpu_us_per_frame",
    "ingest_frames_per_s",
)


@dataclass(frozen=True)
class Topology:
    """One mode's Redis, running: where writes land (flushed before each run, read back, its CPU
    measured: the primary, or a cluster's every primary), REDIS_URL's node, and the settings that
    make the messenger and the server reach it this way."""

    mode: str
    redis: RedisServer | RedisClusterNodes
    settings: dict[str, str]


@contextmanager
def single(logs: Path) -> Iterator[Topology]:
    """One redis-server."""
    node = RedisServer(logs)
    with running(node):
        yield Topology(SINGLE, node, {})


@contextmanager
def sentinel(logs: Path) -> Iterator[Topology]:
    """A primary, its replica and three sentinels (quorum 2), as tests/e2e/test_sentinel.py starts them."""
    primary = RedisServer(logs)
    replica = RedisServer(logs, "--replicaof", "127.0.0.1", str(primary.port))
    sentinels = [RedisSentinel(logs, primary.port, SERVICE, down_after_ms=DOWN_AFTER_MS) for _ in range(3)]
    with running(primary, replica, *sentinels):
        # Sentinels find each other through the primary (a hello every 2 s), and the replica from its INFO.
        wait_until(
            lambda: all(s.others() == 2 for s in sentinels), 20, what="the sentinels to know each other"
        )
        wait_until(lambda: replica_ready(primary, replica, sentinels), 20, what="the replica")
        addresses = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        yield Topology(SENTINEL, primary, {"REDIS_SENTINELS": addresses, "REDIS_SENTINEL_SERVICE": SERVICE})


@contextmanager
def cluster(logs: Path) -> Iterator[Topology]:
    """Three primaries with a replica each, as tests/e2e/test_cluster.py starts them."""
    from tests.cluster import RedisClusterNodes  # noqa: PLC0415 (it imports pytest: `make bench` has none)

    nodes = RedisClusterNodes(logs)
    nodes.start()  # stops every node it started if it fails
    try:
        yield Topology(CLUSTER, nodes, {"REDIS_CLUSTER": "1"})
    finally:
        nodes.stop()


def cluster_unavailable() -> str | None:
    """Why this machine cannot run a cluster (None: it can)."""
    from tests.cluster import cluster_supported  # noqa: PLC0415 (as above)

    return cluster_supported()


# The modes compared, the baseline first; each one's Redis, and why it cannot run here (None: it can).
MODES = (SINGLE, SENTINEL, CLUSTER)
TOPOLOGIES: dict[str, Callable[[Path], AbstractContextManager[Topology]]] = {
    SINGLE: single,
    SENTINEL: sentinel,
    CLUSTER: cluster,
}
UNAVAILABLE: dict[str, Callable[[], str | None]] = {CLUSTER: cluster_unavailable}


def paths(symbols: list[str]) -> dict[str, tuple[str, list[str]]]:
    """What wrk asks for, by name: (path, the symbols of its answer, in order)."""
    return {"snapshot": ("/snapshot/BTC_USDT", ["BTCUSDT"]),
            "snapshots": (f"/snapshots?symbols={','.join(symbols)}", symbols)}  # fmt: skip


def wrong_answers(url: str, client: Client, symbols: list[str]) -> int:
    """Symbols of one answer that are neither what Redis held just before it nor just after (all
    of them if it is not a 200)."""
    before = MESSENGER.quotes(client, symbols)
    status, _, doc = http("POST", url)
    after = MESSENGER.quotes(client, symbols)
    if status != 200:
        return len(symbols)
    records = doc.get("snapshots", [doc])
    if [r["symbol"] for r in records] != symbols:
        return len(symbols)
    served = [record_quote(r) for r in records]
    return sum(q not in (before[s], after[s]) for s, q in zip(symbols, served, strict=True))


def serve(
    top: Topology, sim: Simulator, symbols: list[str], seconds: float, connections: int, script: Path,
    logs: Path,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """One mode's serving runs, by path: wrk's figures and the answers sampled."""
    with top.redis.client() as client:
        client.flushall()  # a cluster client sends it to every primary
    env = messenger_env(sim, top.redis.url, LOG_LEVEL="WARNING", **top.settings)
    messenger = Messenger(logs, env, *symbols)
    server = Gunicorn(logs, top.redis.url, workers=None, **top.settings)
    asked = paths(symbols)
    out = {}
    with running(messenger, server), top.redis.client() as client:
        every = f"{server.url}{asked['snapshots'][0]}"
        wait_until(lambda: http("POST", every)[0] == 200, 30, what=f"{top.mode}: every symbol served")
        for name, (path, answered) in asked.items():
            url = f"{server.url}{path}"
            load(url, WARM_S, connections, script)
            figures = load(url, seconds, connections, script)
            wrong = sum(wrong_answers(url, client, answered) for _ in range(SAMPLES))
            out[name] = {**figures, "answers_checked": SAMPLES * len(answered), "wrong_answers": wrong}
    return out


def summarize(
    serving: dict[str, dict[str, list[dict[str, float]]]], ingested: dict[str, list[dict[str, float]]],
    not_run: dict[str, str],
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:  # fmt: skip
    """Per mode (NOT_RUN and why, for one not run): medians of each figure, and the worst or the
    sum of what must be zero; per mode but single, its figures' ratios to single's."""
    modes: dict[str, Any] = {}
    for mode in MODES:
        if mode not in ingested:
            modes[mode] = NOT_RUN + not_run[mode]
            continue
        row: dict[str, Any] = {}
        for name, runs in serving[mode].items():
            row.update({f"{name}_{metric}": value for metric, value in medians(runs).items()})
            for counted in ("non_2xx", "answers_checked", "wrong_answers"):
                row[f"{name}_{counted}"] = sum(r[counted] for r in runs)
        row.update({f"ingest_{metric}": value for metric, value in ingest.figures(ingested[mode]).items()})
        modes[mode] = rounded(row)
    base = modes[SINGLE]
    ratios = {
        mode: {figure: round(row[figure] / base[figure], 3) for figure in RATIOS}
        for mode, row in modes.items()
        if mode != SINGLE and not isinstance(row, str)
    }
    return modes, ratios


def run(
    seconds: float = 10.0, ingest_seconds: float = 5.0, symbols: int = 100, connections: int = 50,
    repeats: int = 3, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every mode this machine runs, ``repeats`` times, serving then ingest, the order flipped each
    repeat."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    not_run = {m: why for m, unavailable in UNAVAILABLE.items() if (why := unavailable()) is not None}
    modes = [m for m in MODES if m not in not_run]
    serving: dict[str, dict[str, list[dict[str, float]]]] = {m: {} for m in modes}
    ingested: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        logs = Path(tmp)
        script = logs / "post.lua"
        script.write_text(POST)
        # The simulator streams while serving and answers REST (exchangeInfo, seeds) for ingest.
        sim = Simulator(logs, *trading_symbols(symbols))
        feed = FeedProcess(logs, "--no-flood")
        stack.enter_context(running(sim, feed))
        tops = {mode: stack.enter_context(TOPOLOGIES[mode](logs)) for mode in modes}
        flooded = ingest.symbols_for(sim, symbols)
        streamed = flooded[:SNAPSHOTS_SYMBOLS]
        source = FeedSource(feed)
        for repeat in range(repeats):
            order = modes if repeat % 2 == 0 else modes[::-1]
            for mode in order:
                for name, figures in serve(
                    tops[mode], sim, streamed, seconds, connections, script, logs
                ).items():
                    serving[mode].setdefault(name, []).append(figures)
                    if progress is not None:
                        progress(f"redis modes: {mode} serving {name}: {rounded(figures)}")
            for mode in order:
                top = tops[mode]
                measured = ingest.measure(
                    MESSENGER, source, flooded, ingest_seconds, top.redis, sim.rest_url, logs, top.settings
                )
                ingested[mode].append(measured)
                if progress is not None:
                    progress(f"redis modes: {mode} ingest: {rounded(measured)}")
    by_mode, ratios = summarize(serving, ingested, not_run)
    return {"connections": connections, "snapshots_symbols": len(streamed), "symbols": symbols,
            "source": source.name, "modes": by_mode, "ratios_to_single": ratios}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_modes", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    parser.add_argument("--ingest-seconds", type=float, default=5.0, help="each ingest run's steady window")
    parser.add_argument("--symbols", type=int, default=100, help="symbols the feed floods for ingest")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args.seconds, args.ingest_seconds, args.symbols, args.connections, args.repeats, say)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
