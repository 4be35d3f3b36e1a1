"""Flood: one client asks for every symbol x many kinds at once; does everyone else still get served?

    python -m bench.flood [--threads 64] [--attack 30] [--after 60] [--clients] [--trading-only]
                          [--sim-rate 5] [--port-base 3800] [--logs DIR] [KEY=VALUE ...]

The flood of issue 11. Starts a private redis-server, the simulator (the recorded 1,695 symbols),
``python -m messenger btcusdt`` and gunicorn as shipped, with any settings given as ``KEY=VALUE``.
Then ``threads`` threads ask ``POST /snapshots`` for every listed symbol (100 a request) x ten
kinds for ``attack`` seconds, from one address (or, with ``--clients``, each from its own, via a
trusted proxy's X-Forwarded-For), while one more polls the pinned BTCUSDT every ~10 ms during the
attack and ``after`` seconds past it. Reports the attack's statuses, the pinned symbol's non-200
answers and their longest run, the messenger's RSS, the streams and connections the exchange saw
and the demand set. Everything runs on the same cores, the simulated exchange included.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
from collections import Counter
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import orjson

import tests.processes
from bench.stack import proc_stats
from contract.keys import DEMAND_KEY
from contract.members import heartbeats
from messenger.binance import KINDS_BY_KEY
from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, http, messenger_env, wait_until

KINDS = ("bookTicker", "trade", "aggTrade", "kline_1m", "miniTicker", "ticker", "avgPrice",
         "depth5", "depth10", "depth20")  # fmt: skip
PER_REQUEST = 100
PINNED = "BTC_USDT"


class Client:
    """A keep-alive HTTP client of one thread."""

    def __init__(self, port: int, forwarded_for: str | None = None) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        if forwarded_for:
            self.headers["X-Forwarded-For"] = forwarded_for
        self.conn = HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """One request; (status, headers, body); status 0 when the connection failed."""
        try:
            self.conn.request("POST", path, body, self.headers)
            response = self.conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (OSError, HTTPException):
            self.conn.close()
            self.conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0, {}, b""


def attacker(
    port: int, jobs: list[bytes], offset: int, until: float, out: Counter[Any], address: str | None
) -> None:
    """Ask for every (kind, 100 symbols) in turn until the deadline; count statuses."""
    client = Client(port, address)
    for body in itertools.islice(itertools.cycle(jobs), offset, None):
        if time.monotonic() >= until:
            return
        status, headers, raw = client.post("/snapshots", body)
        out[status] += 1
        if status == 429:
            out["429 with Retry-After"] += "Retry-After" in headers
            out["429 as JSON"] += raw.startswith(b"{")
            if not raw.startswith(b"{"):
                out[f"429 body {raw[:80]!r} {headers}"] += 1


def poller(port: int, until: float, answers: list[tuple[float, int]]) -> None:
    """The pinned symbol, every ~10 ms: (time, status) of each answer."""
    client = Client(port)
    while time.monotonic() < until:
        status, _, _ = client.post(f"/snapshot/{PINNED}")
        answers.append((time.monotonic(), status))
        time.sleep(0.01)


def watch_exchange(sim: Simulator, until: float, seen: list[tuple[int, int]]) -> None:
    """(streams subscribed, open connections) as the exchange saw them, every second or so."""
    while time.monotonic() < until:
        status, _, state = http("GET", f"{sim.rest_url}/_sim/state", timeout_s=30)
        if status == 200:
            sessions = state["sessions"]
            seen.append((sum(len(s["streams"]) for s in sessions), len(sessions)))
        time.sleep(1.0)


def not_carried(sim: Simulator, client: Any) -> list[str]:
    """Members of the demand set whose stream the exchange does not carry."""
    carried = {stream for s in sim.sessions() for stream in s["streams"]}
    members = [m.decode() for m in client.zrange(DEMAND_KEY, 0, -1)]
    return [m for m in members if KINDS_BY_KEY[m.split(":")[0]].stream(m.split(":")[1]) not in carried]


def lapses(answers: list[tuple[float, int]]) -> tuple[int, float]:
    """How many non-200 answers, and the longest span from a first failure to the next 200."""
    failed, longest, since = 0, 0.0, None
    for at, status in answers:
        if status != 200:
            failed += 1
            since = at if since is None else since
        elif since is not None:
            longest, since = max(longest, at - since), None
    return failed, longest


def main() -> None:
    """Run the flood once and print its figures as JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.flood")
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--attack", type=float, default=30.0)
    p.add_argument("--after", type=float, default=60.0)
    p.add_argument("--port-base", type=int, default=0, help="ports from here on (default: any free)")
    p.add_argument("--sim-rate", type=float, default=5.0, help="updates a second per stream (make demo: 5)")
    p.add_argument("--logs", type=Path, help="keep the processes' logs here")
    p.add_argument("--trading-only", action="store_true", help="ask only for trading symbols (no 409s)")
    p.add_argument(
        "--clients", action="store_true",
        help="each thread a client of its own (as if behind a trusted proxy: TRUSTED_PROXY_HOPS=1 and "
        "X-Forwarded-For), so that the cap, not one client's rate, is what limits them",
    )  # fmt: skip
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args()
    settings = dict(s.split("=", 1) for s in args.settings)
    if args.clients:
        settings["TRUSTED_PROXY_HOPS"] = "1"
    if args.port_base:
        ports = itertools.count(args.port_base)
        tests.processes.free_port = lambda: next(ports)
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        redis_server = RedisServer(logs)
        sim = Simulator(logs, "--rate", str(args.sim_rate))
        started: list[Any] = []
        try:
            for make in (
                lambda: redis_server,
                lambda: sim,
                lambda: Messenger(logs, messenger_env(sim, redis_server.url, **settings), "btcusdt"),
                lambda: Gunicorn(logs, redis_server.url, workers=None, **settings),
            ):
                process = make()
                process.start()
                started.append(process)
            _, _, messenger, server = started
            print(run(args, sim, messenger, server, redis_server))
        finally:
            for process in reversed(started):
                process.stop()


def run(args: argparse.Namespace, sim: Simulator, messenger: Messenger, server: Gunicorn, redis: Any) -> str:
    """The flood against a running stack; its figures as JSON."""
    wait_until(lambda: server.snapshot(PINNED)[0] == 200, 20, what="the pinned symbol")
    _, _, info = http("GET", f"{server.url}/api/v3/exchangeInfo")
    symbols = [s["symbol"] for s in info["symbols"] if s["status"] == "TRADING" or not args.trading_only]
    jobs = [
        orjson.dumps({"symbols": symbols[i : i + PER_REQUEST], "kind": kind})
        for kind in KINDS
        for i in range(0, len(symbols), PER_REQUEST)
    ]
    assert messenger.proc is not None
    pid, client = messenger.proc.pid, redis.client()
    rss_start = proc_stats(pid)[1]
    now = time.monotonic()
    attack_end, poll_end = now + args.attack, now + args.attack + args.after
    statuses: Counter[Any] = Counter()
    answers: list[tuple[float, int]] = []
    threads = [
        threading.Thread(
            target=attacker,
            args=(
                server.port,
                jobs,
                i * len(jobs) // args.threads,
                attack_end,
                statuses,
                f"10.0.{i // 250}.{i % 250 + 1}" if args.clients else None,
            ),
        )
        for i in range(args.threads)
    ]
    threads.append(threading.Thread(target=poller, args=(server.port, poll_end, answers)))
    exchange: list[tuple[int, int]] = []
    threads.append(threading.Thread(target=watch_exchange, args=(sim, poll_end, exchange)))
    for thread in threads:
        thread.start()
    rss_peak, beats = rss_start, []
    while time.monotonic() < poll_end:
        rss_peak = max(rss_peak, proc_stats(pid)[1])
        beats.extend(heartbeats(client)[1])
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    failed, longest = lapses(answers)
    during = [a for a in answers if a[0] < attack_end]
    return orjson.dumps({
        "attack_statuses": {str(k): v for k, v in statuses.items()},
        "pinned_requests": len(answers),
        "pinned_non_200": failed,
        "pinned_non_200_during_attack": lapses(during)[0],
        "pinned_longest_lapse_s": round(longest, 3),
        "pinned_lapses_s_after_attack_end": [(round(at - attack_end, 2), s) for at, s in answers
                                             if s != 200][:40],
        "messenger_rss_mb": {"start": rss_start >> 20, "peak": rss_peak >> 20,
                             "end": proc_stats(pid)[1] >> 20},
        "exchange_streams_peak": max((n for n, _ in exchange), default=None),
        "exchange_connections_peak": max((c for _, c in exchange), default=None),
        "exchange_streams_end": exchange[-1][0] if exchange else None,
        "demand_set_end": client.zcard(DEMAND_KEY),
        "demand_not_carried": not_carried(sim, client),
        "tracked_peak": max((b.get("tracked", 0) for b in beats), default=0),
        "fresh_min_share": min((b["fresh"] / b["tracked"] for b in beats if b.get("tracked")), default=None),
    }, option=orjson.OPT_INDENT_2).decode()  # fmt: skip


if __name__ == "__main__":
    main()
