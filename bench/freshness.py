"""Freshness: how long from the exchange sending a frame until a client can read it over HTTP.

    python -m bench.freshness [--samples 400] [--repeats 3] [--symbols 2000] [--rate 10]
                              [--transports websocket-client,picows]

The simulator streams bookTicker for 2,000 symbols at 10 updates/s each (20,000 frames/s), the
messenger runs ``--all`` and the server runs as shipped (gunicorn, gevent). A probe then, again
and again, makes the simulator send a new top of book for BTCUSDT and polls until the new
``update_id`` is readable. Samples alternate between two readers, side by side in one run:

- ``http``: ``POST /snapshot/BTC_USDT`` on a kept-alive connection, what a client sees;
- ``redis``: ``GET`` of the key straight from Redis (the baseline: how fresh Redis is).

Each repeat runs the messenger once on each ``WS_TRANSPORT`` (the default ``websocket-client``,
then ``picows``; the order alternates between repeats), against the same flood: the figures of the
default transport keep their plain names, picows's are prefixed ``picows_``.

A latency is counted from the simulator handing the frame to its connections to the end of the
first read that returned it, so it includes the probe's own last read (an upper bound). The
messenger's own share (frame received -> acknowledged by Redis) is read from its histogram
metric over the same samples, as the upper bound of the bucket holding its 99th percentile.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.stack import (
    frames_sent,
    medians,
    percentile,
    redis_and_simulator,
    rounded,
    running,
    trading_symbols,
)
from contract.keys import snapshot_key
from tests.processes import Gunicorn, Messenger, free_port, messenger_env, wait_until
from tests.processes import http as http_get

KEY = snapshot_key("bookticker", "btcusdt")
GIVE_UP_S = 2.0
BUCKET = "transmute_messenger_frame_to_redis_seconds_bucket"


def latency_buckets(metrics_port: int) -> dict[float, float]:
    """The messenger's frame-to-Redis histogram: upper bound (s) -> observations at or below it."""
    text = http_get("GET", f"http://127.0.0.1:{metrics_port}/metrics")[2]
    out = {}
    for line in text.splitlines():
        if line.startswith(BUCKET):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_percentile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound (ms) of the first bucket holding the q-th percentile of what came in between."""
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= q / 100 * total:
            return bound * 1000
    return float("inf")


class HttpReader:
    """``POST /snapshot/BTC_USDT`` on one kept-alive connection: the update id served."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

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
        update_id: int | None = orjson.loads(body)["update_id"]
        return update_id or -1


class RedisReader:
    """``GET`` of the key: the update id in Redis."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self) -> int:
        raw = self.client.get(KEY)
        if raw is None:
            return -1
        update_id: int | None = orjson.loads(raw)["update_id"]
        return update_id or -1


def sample(sim_conn: http.client.HTTPConnection, reader: Any, n: int) -> float | None:
    """Send a new top of book; seconds until ``reader`` returns it (None: never, within GIVE_UP_S)."""
    doc = {
        "symbol": "BTCUSDT",
        "bid_price": f"{40000 + n % 1000}.01000000",
        "bid_quantity": "1.00000000",
        "ask_price": f"{40000 + n % 1000}.02000000",
        "ask_quantity": "1.00000000",
    }
    body, headers = orjson.dumps(doc), {"Content-Type": "application/json"}
    try:
        sim_conn.request("POST", "/_sim/book", body, headers)
        response = sim_conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionError):
        sim_conn.close()  # reconnected by the next request
        sim_conn.request("POST", "/_sim/book", body, headers)
        response = sim_conn.getresponse()
    sent = orjson.loads(response.read())
    published_s: float = sent["published_at_ms"] / 1000
    while time.time() - published_s < GIVE_UP_S:
        if reader() >= sent["u"]:
            return time.time() - published_s
    return None


def run_once(
    symbols: int, rate: float, samples: int, transport: str = "websocket-client"
) -> dict[str, float]:
    """One measurement with the messenger on ``transport``: p50/p99 in ms for each reader, and the
    rate actually streamed."""
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server, sim = redis_and_simulator(logs, "--rate", str(rate), *trading_symbols(symbols))
        metrics_port = free_port()
        env = messenger_env(
            sim,
            redis_server.url,
            STATS_INTERVAL_S=60,
            LOG_LEVEL="WARNING",
            METRICS_PORT=metrics_port,
            WS_TRANSPORT=transport,
        )
        messenger = Messenger(logs, env, "--all")
        gunicorn = Gunicorn(logs, redis_server.url, workers=None)
        with running(redis_server, sim, messenger, gunicorn):
            client = redis_server.client()
            wait_until(lambda: len(client.keys("transmute:bookticker:*")) >= symbols, 60, 0.1, what="all")
            time.sleep(1.0)  # seeds done: the steady stream
            (sent0, _), t0, buckets0 = frames_sent(sim), time.monotonic(), latency_buckets(metrics_port)
            sim_conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
            readers = {"http": HttpReader(gunicorn.port), "redis": RedisReader(client)}
            latencies: dict[str, list[float]] = {"http": [], "redis": []}
            missed = 0
            for n in range(samples):
                name = "http" if n % 2 == 0 else "redis"
                latency = sample(sim_conn, readers[name], n)
                if latency is None:
                    missed += 1
                else:
                    latencies[name].append(latency * 1000)
                time.sleep(random.uniform(0.005, 0.015))  # spread samples over the market's ticks
            (sent1, _), t1, buckets1 = frames_sent(sim), time.monotonic(), latency_buckets(metrics_port)
    return {
        "http_p50_ms": percentile(latencies["http"], 50),
        "http_p99_ms": percentile(latencies["http"], 99),
        "redis_p50_ms": percentile(latencies["redis"], 50),
        "redis_p99_ms": percentile(latencies["redis"], 99),
        "messenger_p99_ms_at_most": bucket_percentile(buckets0, buckets1, 99),
        "frames_per_s": (sent1 - sent0) / (t1 - t0),
        "missed": float(missed),
    }


DEFAULT_TRANSPORT = "websocket-client"


def run(
    symbols: int = 2000,
    rate: float = 10.0,
    samples: int = 400,
    repeats: int = 3,
    transports: tuple[str, ...] = (DEFAULT_TRANSPORT, "picows"),
) -> dict[str, Any]:
    """Medians over ``repeats`` runs of each transport, with the HTTP path's ratio to reading Redis
    directly; each repeat runs every transport, in an order that alternates between repeats."""
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in transports}
    for n in range(repeats):
        for transport in transports if n % 2 == 0 else transports[::-1]:
            runs[transport].append(run_once(symbols, rate, samples, transport))
    row: dict[str, Any] = {"symbols": symbols}
    for transport, measured in runs.items():
        figures = medians(measured)
        figures["http_p99_over_redis_p99"] = figures["http_p99_ms"] / figures["redis_p99_ms"]
        prefix = "" if transport == DEFAULT_TRANSPORT else f"{transport}_"
        row.update({prefix + name: value for name, value in figures.items()})
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__)
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10.0, help="updates per second per symbol")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transports", default=f"{DEFAULT_TRANSPORT},picows", metavar="NAME,...")
    args = parser.parse_args(argv)
    transports = tuple(filter(None, args.transports.split(",")))
    print(json.dumps(rounded(run(args.symbols, args.rate, args.samples, args.repeats, transports))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
