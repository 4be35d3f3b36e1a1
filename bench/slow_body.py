"""Slow request bodies: a normal client's latency while thousands of sockets trickle their bodies.

    python -m bench.slow_body [--sockets 8200] [--interval 5] [--seconds 20]

The attack of issue 11: sockets that send a request's headers declaring a 1,000-byte body, then
one byte of it every 5 s. It runs against gunicorn as shipped (server.gunicorn_conf, its worker
count), with the messenger streaming BTCUSDT from the simulator into a private Redis, from a
process of its own (``tests/slow_clients.py``). In each phase one normal client asks for
``POST /snapshot/BTC_USDT`` over and over, each time on a new connection, and one request sends 2
bytes of a declared 100 and waits for its answer:

- ``quiet``: no attack;
- ``attack``: the sockets opened once, as in the issue; the server cuts each at its deadline;
- ``sustained``: every socket the server cuts is opened again at once, for ``--seconds``.

Prints one JSON line: per phase the normal client's p50, p99 and worst latency (ms), requests,
answers other than 200 and errors, over the whole phase and (``held_*``) from when the attack
held 99 % of its sockets until the server cut the first one (``sustained``: to the end); when the
short body was answered and with what; the server's CPU and how busy the machine was; and what
the attack saw (sockets opened, answers, most held at once). Raises the open-file limit it needs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.stack import proc_stats, redis_and_simulator, rounded, running
from tests.processes import Gunicorn, Messenger, messenger_env, wait_until
from tests.slow_clients import AttackProcess, allow_open_files, normal_client, short_body


def server_cpu_s(server: Gunicorn) -> float:
    """CPU seconds used so far by gunicorn's arbiter and its workers."""
    assert server.proc is not None
    pid = server.proc.pid
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return sum(proc_stats(p)[0] for p in [pid, *children])


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks, from /proc/stat."""
    ticks = [float(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def watch(attacker: AttackProcess, sockets: int, until: float) -> dict[str, float]:
    """When the attack first held 99 % of its sockets, and when the server first cut one."""
    seen: dict[str, float] = {}

    def poll() -> None:
        while time.monotonic() < until and len(seen) < 2:
            if "held_at" not in seen and attacker.sending() >= 0.99 * sockets:
                seen["held_at"] = time.monotonic()
            if "cut_at" not in seen and attacker.answered() > 0:
                seen["cut_at"] = time.monotonic()
            time.sleep(0.01)

    threading.Thread(target=poll, daemon=True).start()
    return seen


def phase(server: Gunicorn, seconds: float, attack: tuple[int, float, bool] | None) -> dict[str, Any]:
    """One phase: the normal client and the short body, beside the attack if there is one; with the
    CPU the server used meanwhile, how busy the machine was, and its load average as it began."""
    attacker, marks = None, {}
    if attack is not None:
        attacker = AttackProcess(server.port, *attack)
        attacker.start()
        marks = watch(attacker, attack[0], time.monotonic() + seconds)
        time.sleep(0.5)  # the attack is under way
    cpu_before, load_before, busy_before = server_cpu_s(server), os.getloadavg()[0], machine_busy()
    short: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: short.update(answer=short_body(server.port, timeout_s=60)))
    waiter.start()
    seen = normal_client(server.port, seconds - 0.5 if attack else seconds, timeout_s=10.0)
    waiter.join(60)
    stats = attacker.stop() if attacker is not None else None
    row: dict[str, Any] = {
        "server_cpu_s": server_cpu_s(server) - cpu_before,
        # How busy the whole machine was meanwhile (1.0: every core, all the time).
        "machine_busy": (machine_busy()[0] - busy_before[0]) / (machine_busy()[1] - busy_before[1]),
        "load_average": load_before,
        "p50_ms": seen.p(50),
        "p99_ms": seen.p(99),
        "max_ms": max(seen.ms),
        "requests": len(seen.ms),
        "not_200": sum(n for status, n in seen.statuses.items() if status != 200),
        "errors": len(seen.errors),
    }
    elapsed, status, _ = short.get("answer", (float("nan"), 0, None))
    row["short_body_s"], row["short_body_status"] = elapsed, status
    if "held_at" in marks:
        # While every socket was held: until the first cut, or (sustained) to the end.
        held = (marks["held_at"], marks.get("cut_at", math.inf) if not attack or not attack[2] else math.inf)
        row["held_s"] = min(held[1], time.monotonic()) - held[0]
        row["held_requests"] = seen.count(*held)
        row["held_p50_ms"], row["held_p99_ms"] = seen.p(50, *held), seen.p(99, *held)
    if stats is not None:
        row["attack"] = {**asdict(stats), "answered": {str(k): n for k, n in stats.answered.items()}}
    return row


def run(sockets: int = 8200, interval_s: float = 5.0, seconds: float = 20.0) -> dict[str, Any]:
    """The three phases against one stack."""
    allow_open_files(1000)
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server, sim = redis_and_simulator(logs, "--rate", "1")
        messenger = Messenger(logs, messenger_env(sim, redis_server.url, LOG_LEVEL="WARNING"), "btcusdt")
        server = Gunicorn(logs, redis_server.url, workers=None)
        with running(redis_server, sim, messenger, server):
            wait_until(lambda: server.snapshot("BTC_USDT")[0] == 200, 20, what="BTCUSDT served")
            row: dict[str, Any] = {"sockets": sockets, "interval_s": interval_s, "seconds": seconds}
            row["quiet"] = phase(server, min(seconds, 10.0), None)
            row["attack"] = phase(server, seconds, (sockets, interval_s, False))
            time.sleep(2)
            row["sustained"] = phase(server, seconds, (sockets, interval_s, True))
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.slow_body", description=__doc__)
    parser.add_argument("--sockets", type=int, default=8200)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    row = run(args.sockets, args.interval, args.seconds)
    print(json.dumps({k: rounded(v) if isinstance(v, dict) else v for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
