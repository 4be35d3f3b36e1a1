"""Freshness: how long from the exchange sending a frame until a client can read it over HTTP.

    python -m bench.freshness [--samples 1200] [--repeats 3] [--symbols 2000] [--rate 10]
                              [--transports websocket-client,picows] [--source simulator,feed]
                              [--processes 1,0] [--peer feed]

A flood source streams bookTicker for 2,000 symbols at 10 updates/s each (20,000 frames/s), the
messenger runs ``--all`` and the server runs as shipped (gunicorn, gevent). A probe then, again
and again, makes the source send a new top of book for BTCUSDT and polls until the new
``update_id`` is readable. Samples alternate between two readers, side by side in one run:

- ``http``: ``POST /snapshot/BTC_USDT`` on a kept-alive connection, what a client sees;
- ``redis``: ``GET`` of the key straight from Redis (the baseline: how fresh Redis is).

Two flood sources, side by side in one run (``--source``):

- ``simulator``: the project's simulator (``--rate``, random symbols), which also makes the probe's
  top of book; it takes a large share of a core at 20,000 frames/s, on the same cores as the
  messenger, Redis, gunicorn and the probe (Binance in production is on another machine);
- ``feed``: the cheap feed paced at the same total rate (bench/feed.py ``--rate``, rotating over
  every symbol, Binance's frames pre-encoded), probed with ``POST /_feed/probe``; the simulator
  still answers REST (exchangeInfo, seeds) and streams nothing.

Each repeat runs the messenger once on each ``WS_TRANSPORT`` (the default ``websocket-client``,
then ``picows``) against each source; the order alternates between repeats. The figures of the
simulator and the default transport keep their plain names; picows's are prefixed ``picows_``, the
feed's ``feed_`` (``feed_picows_`` for both).

The messenger runs as one process (``PROCESSES=1``, the setting's default), and, on the feed with
the default transport, also as ``docker compose up`` and ``make run`` run it: one member process per
core (``PROCESSES=0``; figures prefixed ``members_``, e.g. ``feed_members_http_p99_ms``; its
histogram summed over the members). ``--processes 1,0`` asks for both on every source and transport.

The floor beside them (``--peer``, by default on the feed; figures prefixed ``peer_``, e.g.
``feed_peer_http_p99_ms``): the same flood read by the picows peer of the ingest benchmark writing
as frames come (bench/peer_picows.py ``--as-they-come``: compiled framing, plain ``SET``s, one
round trip at a time) and answered by the serving benchmark's bare app (bench/bare_wsgi.py: one
Redis ``GET`` a request) under gunicorn as shipped. It keeps no freshness rule (no vouchers, no
conditional writes, no withdrawal), so it is not a service; it is how fresh this path can be on
this machine, at this moment: ``http_p99_over_peer`` is a side's HTTP p99 over the floor's on its
source, in the same repeat, and tells the service's share of a tail from the host's.

Beside each: the source's own share of a core over the samples (``source_cpu_share``, from /proc)
and the machine's 1-minute load when the run began.

Samples are taken in the steady state: once every symbol is in Redis and the messenger has done
the last step of its startup (frozen its startup heap, messenger.heap: one full collection of
~30 ms at 2,000 symbols, 10 s after it starts, once in its life), and a second more.

A latency is counted from the source writing the frame to a connection (the feed's ``sent_at``;
the simulator's ``written_at_ms``, simulator.probes: its connections queue frames, and under the
flood the probe's waits behind the ones not yet written, a wait reported beside the figures as
``source_queued_p50_ms`` / ``_p99_ms``; both marks are taken just before the write) to the end of
the first read that returned it, so it includes the probe's own last read (an upper bound); each
read's own round trip is reported too
(``http_read_p50_ms`` ...), under the same flood: the part of a figure that is the reader's. The
messenger's own share (frame received -> acknowledged by Redis) is read from its histogram metric
over the same samples, as the upper bound of the bucket holding its 99th percentile.

Beside the latencies, what each part took of a core over the samples (``messenger_cpu_share``,
``redis_cpu_share``, ``server_cpu_share`` for gunicorn and its workers, ``probe_cpu_share`` for
this process, from /proc) and ``machine_busy_cores``, the busy time of all cores together from
/proc/stat (2.0: both cores of a 2-core machine busy): everything here shares the machine's cores,
so a tail is read against how full they were.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from bench.ingest import symbols_for
from bench.peer_picows import AS_THEY_COME
from bench.peer_picows import PEER as PICOWS_PEER
from bench.peers import peer_key
from bench.serving import BareApp
from bench.sources import FeedProcess, FeedSource, SimulatorSource
from bench.stack import (
    cpu_between,
    cpu_by_pid,
    machine_busy,
    medians,
    metrics_ports,
    percentile,
    proc_stats,
    process_tree,
    redis_and_simulator,
    rounded,
    running,
    trading_symbols,
)
from contract.keys import snapshot_key
from tests.processes import Gunicorn, Messenger, Process, free_port, messenger_env, wait_until
from tests.processes import http as http_get

KEY = snapshot_key("bookticker", "btcusdt")
GIVE_UP_S = 2.0
# Samples a run takes, alternating between the two readers: 600 each, so a reader's 99th
# percentile is its 6th-slowest sample. (At 400, 200 each, it was the 2nd-slowest: one stall of
# the host moved the verdict.) About 16 s of a run.
DEFAULT_SAMPLES = 1200
BUCKET = "transmute_messenger_frame_to_redis_seconds_bucket"
FROZEN = "transmute_messenger_heap_frozen_objects "
BATCHES = "transmute_messenger_redis_batches_total "


def latency_buckets(metrics_port: int, members: int = 1) -> dict[float, float]:
    """The messenger's frame-to-Redis histogram: upper bound (s) -> observations at or below it
    (summed over ``members`` member processes, on METRICS_PORT + their index)."""
    out: dict[float, float] = {}
    for index in range(members):
        text = http_get("GET", f"http://127.0.0.1:{metrics_port + index}/metrics")[2]
        for line in text.splitlines():
            if line.startswith(BUCKET):
                bound = float(line.split('le="', 1)[1].split('"', 1)[0])
                out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def writer_batches(metrics_port: int, members: int = 1) -> float:
    """Round trips the messenger's writers made to Redis so far, summed over ``members``."""
    total = 0.0
    for index in range(members):
        text = http_get("GET", f"http://127.0.0.1:{metrics_port + index}/metrics")[2]
        total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(BATCHES))
    return total


def heap_frozen(metrics_port: int, members: int = 1) -> bool:
    """Whether every member has frozen its startup heap (messenger.heap): its last startup step."""
    for index in range(members):
        text = http_get("GET", f"http://127.0.0.1:{metrics_port + index}/metrics")[2]
        if not any(line.startswith(FROZEN) and not line.endswith(" 0.0") for line in text.splitlines()):
            return False
    return True


def bucket_percentile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound (ms) of the first bucket holding the q-th percentile of what came in between."""
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= q / 100 * total:
            return bound * 1000
    return float("inf")


class HttpReader:
    """``POST /snapshot/BTC_USDT`` on one kept-alive connection: the update id served (its
    ``field``: the bare app answers with the peer's payload, whose update id is ``u``)."""

    def __init__(self, port: int, field: str = "update_id") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.field = field

    def __call__(self) -> int:
        try:
            self.conn.request("POST", "/snapshot/BTC_USDT")
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # The server closed the kept-alive connection (its keep-alive timeout): a client
            # connects again, as this one does.
            self.conn.close()
            self.conn.request("POST", "/snapshot/BTC_USDT")
            response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            return -1
        update_id: int | None = orjson.loads(body)[self.field]
        return update_id or -1


class RedisReader:
    """``GET`` of the key: the update id in Redis (``key`` and ``field``: the peer's, for the floor)."""

    def __init__(self, client: Any, key: str = KEY, field: str = "update_id") -> None:
        self.client, self.key, self.field = client, key, field

    def __call__(self) -> int:
        raw = self.client.get(self.key)
        if raw is None:
            return -1
        update_id: int | None = orjson.loads(raw)[self.field]
        return update_id or -1


Probe = SimulatorSource | FeedSource


def sample(source: Probe, reader: Any, n: int, reads: list[float], queued: list[float]) -> float | None:
    """Send a new top of book; seconds from its write until ``reader`` returns it (None: never,
    within GIVE_UP_S). Each read's own round trip (ms) goes to ``reads``; with the simulator, how
    long the frame waited behind its connection's queue (ms) to ``queued``."""
    u, sent_s = source.probe(n)
    while (started := time.time()) - sent_s < GIVE_UP_S:
        served = reader()
        done = time.time()
        reads.append((done - started) * 1000)
        if served >= u:
            # Asked once the sample is taken, so it costs the sample nothing.
            times = source.written(u) if isinstance(source, SimulatorSource) else None
            if times is not None:  # (never None once read: the mark precedes the write)
                queued.append((times[1] - times[0]) * 1000)
                sent_s = times[1]
            return done - sent_s
    return None


def run_once(
    symbols: int,
    rate: float,
    samples: int,
    transport: str = "websocket-client",
    source_name: str = "simulator",
    processes: int = 1,
) -> dict[str, float]:
    """One measurement with the messenger on ``transport`` fed by ``source_name``, as ``processes``
    member processes (PROCESSES; 0: one per core), or with the floor in its place (``transport``
    PEER): p50/p99 in ms for each reader, the rate actually streamed and the source's share of a core."""
    floor = transport == PEER
    members = processes or cores()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        load = os.getloadavg()[0]
        on_sim = source_name == "simulator"
        # The simulator answers REST (exchangeInfo, seeds) either way, and streams only if it is the source.
        redis_server, sim = redis_and_simulator(
            logs, "--rate", str(rate if on_sim else 0), *trading_symbols(symbols)
        )
        feed = None if on_sim else FeedProcess(logs, "--rate", str(rate * symbols))
        metrics_port = metrics_ports(members)
        ws_url = sim.ws_url if feed is None else feed.ws_url
        flood = [] if feed is None else [feed]
        with ExitStack() as stack:
            stack.enter_context(running(redis_server, sim, *flood))
            reader: Process
            if floor:  # subscribed to what the messenger's --all would be: every trading symbol
                streams = [f"{symbol.lower()}@bookTicker" for symbol in symbols_for(sim, sys.maxsize)]
                argv = ["-m", "bench.peer_picows", AS_THEY_COME, ws_url, redis_server.url, *streams]
                reader = Process(f"peer-{free_port()}", [sys.executable, *argv], logs)
                read_key, field = peer_key(PICOWS_PEER, "BTCUSDT"), "u"
                gunicorn: Gunicorn = BareApp(logs, redis_server.url, key=read_key)
                kept = peer_key(PICOWS_PEER, "*")
            else:
                env = messenger_env(
                    sim,
                    redis_server.url,
                    STATS_INTERVAL_S=60,
                    LOG_LEVEL="WARNING",
                    METRICS_PORT=metrics_port,
                    WS_TRANSPORT=transport,
                    PROCESSES=processes,
                    BINANCE_WS_URL=ws_url,
                )
                reader = Messenger(logs, env, "--all")
                read_key, field = KEY, "update_id"
                gunicorn = Gunicorn(logs, redis_server.url, workers=None)
                kept = "transmute:bookticker:*"
            stack.enter_context(running(reader, gunicorn))
            source: Probe = SimulatorSource(sim) if feed is None else FeedSource(feed)
            client = redis_server.client()
            wait_until(lambda: len(client.keys(kept)) >= symbols, 60, 0.1, what="all")
            if not floor:
                # The steady state: the messenger's startup done, to its last step (messenger.heap:
                # one full collection, ~30 ms at 2,000 symbols, 10 s after the start, once in its life).
                wait_until(
                    lambda: heap_frozen(metrics_port, members), 30, 0.2, what="the messenger's heap frozen"
                )
            time.sleep(1.0)  # seeds done: the steady stream

            def counters() -> tuple[dict[float, float], float]:
                """The messenger's histogram and batches so far (the floor has neither)."""
                if floor:
                    return {}, 0.0
                return latency_buckets(metrics_port, members), writer_batches(metrics_port, members)

            sent0, t0, (buckets0, batches0) = source.frames_sent(), time.monotonic(), counters()
            cpu0 = proc_stats(source.pid)[0]
            pids = {"peer" if floor else "messenger": reader.proc, "redis": redis_server.proc}
            pids["server"] = gunicorn.proc
            parts = {name: process_tree(proc.pid) for name, proc in pids.items() if proc is not None}
            parts0 = {name: cpu_by_pid(pids) for name, pids in parts.items()}
            probe0, busy0 = time.process_time(), machine_busy()
            skipped0 = source.frames_skipped() if isinstance(source, FeedSource) else 0
            http_reader = HttpReader(gunicorn.port, field)
            readers = {"http": http_reader, "redis": RedisReader(client, read_key, field)}
            latencies: dict[str, list[float]] = {"http": [], "redis": []}
            round_trips: dict[str, list[float]] = {"http": [], "redis": []}
            queued: list[float] = []
            missed = 0
            for n in range(samples):
                name = "http" if n % 2 == 0 else "redis"
                latency = sample(source, readers[name], n, round_trips[name], queued)
                if latency is None:
                    missed += 1
                else:
                    latencies[name].append(latency * 1000)
                time.sleep(random.uniform(0.005, 0.015))  # spread samples over the market's ticks
            sent1, t1, (buckets1, batches1) = source.frames_sent(), time.monotonic(), counters()
            cpu1 = proc_stats(source.pid)[0]
            parts1 = {name: cpu_by_pid(pids) for name, pids in parts.items()}
            probe1, busy1 = time.process_time(), machine_busy()
            skipped1 = source.frames_skipped() if isinstance(source, FeedSource) else 0
            http_reader.conn.close()
            source.close()
    figures = {
        "http_p50_ms": percentile(latencies["http"], 50),
        "http_p99_ms": percentile(latencies["http"], 99),
        "redis_p50_ms": percentile(latencies["redis"], 50),
        "redis_p99_ms": percentile(latencies["redis"], 99),
        # One read's round trip, whatever it returned: what the reader itself adds to the figures.
        "http_read_p50_ms": percentile(round_trips["http"], 50),
        "http_read_p99_ms": percentile(round_trips["http"], 99),
        "redis_read_p50_ms": percentile(round_trips["redis"], 50),
        "redis_read_p99_ms": percentile(round_trips["redis"], 99),
        "frames_per_s": (sent1 - sent0) / (t1 - t0),
        "source_cpu_share": (cpu1 - cpu0) / (t1 - t0),
        **{f"{name}_cpu_share": cpu_between(parts0[name], parts1[name]) / (t1 - t0) for name in parts},
        "probe_cpu_share": (probe1 - probe0) / (t1 - t0),
        # Of both cores together: 2.0 is the whole machine (busy_cores over the same samples).
        "machine_busy_cores": (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1),
        "load_1m": load,
        "missed": float(missed),
    }
    if not floor:
        figures["messenger_p99_ms_at_most"] = bucket_percentile(buckets0, buckets1, 99)
        # The writers' round trips to Redis: at a paced rate the messenger's cost is mostly per batch.
        figures["writer_batches_per_s"] = (batches1 - batches0) / (t1 - t0)
    if on_sim and queued:  # the probe's wait in the simulator's queue (before the write counted from)
        figures["source_queued_p50_ms"] = percentile(queued, 50)
        figures["source_queued_p99_ms"] = percentile(queued, 99)
    if not on_sim:  # a paced feed skips what the messenger is too far behind to take; the simulator queues it
        figures["frames_skipped_per_s"] = (skipped1 - skipped0) / (t1 - t0)
    return figures


DEFAULT_TRANSPORT = "websocket-client"
TRANSPORTS = (DEFAULT_TRANSPORT, "picows")
DEFAULT_SOURCE = "simulator"
SOURCES = (DEFAULT_SOURCE, "feed")
# Member processes (PROCESSES): the setting's default, and one per core (0), as compose runs them.
PER_CORE = 0
PROCESSES = (1, PER_CORE)
# Where one member per core is measured unless asked otherwise (each side costs a minute a repeat).
PER_CORE_SIDES = (("feed", DEFAULT_TRANSPORT),)
# The floor (module docstring) in the messenger's place: a side of its own, named as a transport.
PEER = "peer"
# The sources the floor is measured on unless asked otherwise.
PEER_SOURCES = ("feed",)


def cores() -> int:
    """The cores this process may run on: how many members PROCESSES=0 starts (messenger.__main__)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prefix(source: str, transport: str, processes: int = 1) -> str:
    """Where a source's, transport's and member count's figures are named: ``feed_picows_http_p99_ms``,
    ``feed_members_http_p99_ms`` (one member per core)."""
    named = [source] * (source != DEFAULT_SOURCE) + [transport] * (transport != DEFAULT_TRANSPORT)
    named += ["members"] * (processes != 1)
    return "".join(f"{name}_" for name in named)


def sides(
    sources: tuple[str, ...],
    transports: tuple[str, ...],
    processes: tuple[int, ...] | None = None,
    peer: tuple[str, ...] = PEER_SOURCES,
) -> list[tuple[str, str, int]]:
    """(source, transport, processes) to run: every pair as one process, and PER_CORE_SIDES as one
    member per core; with ``processes``, every pair with each of those; then the floor (PEER) on
    each of ``sources`` that ``peer`` names."""
    pairs = [(source, transport) for source in sources for transport in transports]
    if processes is not None:
        every = [(s, t, p) for p in processes for s, t in pairs]
    else:
        every = [(s, t, 1) for s, t in pairs]
        every += [(s, t, PER_CORE) for s, t in pairs if (s, t) in PER_CORE_SIDES]
    return every + [(source, PEER, 1) for source in sources if source in peer]


def run(
    symbols: int = 2000,
    rate: float = 10.0,
    samples: int = DEFAULT_SAMPLES,
    repeats: int = 3,
    transports: tuple[str, ...] = TRANSPORTS,
    sources: tuple[str, ...] = SOURCES,
    progress: Callable[[str], None] | None = None,
    processes: tuple[int, ...] | None = None,
    peer: tuple[str, ...] = PEER_SOURCES,
) -> dict[str, Any]:
    """Medians over ``repeats`` runs of each side (``sides``), with the HTTP path's ratio to reading
    Redis directly, and to the floor on the same source (its median of the per-repeat ratios);
    each repeat runs every side, in an order that alternates between repeats."""
    every = sides(sources, transports, processes, peer)
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {side: [] for side in every}
    for n in range(repeats):
        for source, transport, count in every if n % 2 == 0 else every[::-1]:
            measured = run_once(symbols, rate, samples, transport, source, count)
            runs[source, transport, count].append(measured)
            if progress is not None:
                members = f", {count or cores()} members" if count != 1 else ""
                progress(f"freshness: {source}, {transport}{members}: {rounded(measured)}")
    # A side's tail over the floor's in the same repeat: the host's moments are shared by both.
    for (source, transport, _), taken in runs.items():
        floors = runs.get((source, PEER, 1))
        if floors and transport != PEER:
            for measured, floor in zip(taken, floors, strict=True):
                measured["http_p99_over_peer"] = measured["http_p99_ms"] / floor["http_p99_ms"]
    row: dict[str, Any] = {"symbols": symbols}
    for (source, transport, count), taken in runs.items():
        figures = medians(taken)
        figures["http_p99_over_redis_p99"] = figures["http_p99_ms"] / figures["redis_p99_ms"]
        if count != 1:
            figures["members"] = float(count or cores())
        row.update({prefix(source, transport, count) + name: value for name, value in figures.items()})
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__)
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10.0, help="updates per second per symbol")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transports", default=",".join(TRANSPORTS), metavar="NAME,...")
    parser.add_argument("--source", default=",".join(SOURCES), metavar="simulator,feed",
                        help="the flood sources, side by side (default: both)")  # fmt: skip
    parser.add_argument("--processes", metavar="1,0",
                        help="member processes on every side (0: one per core); default: 1 on every "
                             "side, and one per core on the feed with the default transport")  # fmt: skip
    parser.add_argument("--peer", default=",".join(PEER_SOURCES), metavar="SOURCE,...",
                        help="the sources the floor (a picows peer and a bare app) is measured on "
                             "beside the messenger (default: %(default)s; '' for none)")  # fmt: skip
    args = parser.parse_args(argv)
    processes = None if args.processes is None else tuple(int(p) for p in args.processes.split(",") if p)
    transports = tuple(filter(None, args.transports.split(",")))
    sources = tuple(filter(None, args.source.split(",")))
    if not sources or set(sources) - set(SOURCES):
        parser.error(f"--source: one or more of {', '.join(SOURCES)}")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    peer = tuple(filter(None, args.peer.split(",")))
    if set(peer) - set(SOURCES):
        parser.error(f"--peer: none, or one or more of {', '.join(SOURCES)}")
    row = run(args.symbols, args.rate, args.samples, args.repeats, transports, sources, say, processes, peer)
    print(json.dumps(rounded(row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
