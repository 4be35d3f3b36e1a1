"""The service's processes for a benchmark: started in order, always stopped, figures from /proc."""

from __future__ import annotations

import math
import os
import re
import socket
import statistics
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

from tests.processes import RedisServer, Simulator, free_port

RECORDED_TRADING = 1262  # trading symbols in the recorded exchangeInfo


class Stoppable(Protocol):
    """A process a benchmark starts."""

    def start(self) -> None: ...

    def stop(self, timeout_s: float = 10.0) -> int | None: ...


@contextmanager
def running(*processes: Stoppable) -> Iterator[None]:
    """Start each in turn; stop every one started, last first, however the block ends."""
    with ExitStack() as stack:
        for process in processes:
            process.start()
            stack.callback(process.stop)
        yield


def redis_and_simulator(logs: Path, *sim_args: str) -> tuple[RedisServer, Simulator]:
    """A private redis-server and a simulator (not started)."""
    return RedisServer(logs), Simulator(logs, *sim_args)


def trading_symbols(n: int) -> list[str]:
    """Simulator arguments for at least ``n`` trading symbols: the recorded ones, then synthetic."""
    return ["--extra-symbols", str(max(0, n - RECORDED_TRADING))]


def frames_sent(sim: Simulator) -> tuple[int, int]:
    """(market data frames sent, replies to requests sent) over every connection, open or closed."""
    state = sim.state()
    sessions = state["sessions"] + state["closed"]
    return sum(s["frames_sent"] for s in sessions), sum(s["request_count"] for s in sessions)


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    rss_kb = int(rss[1]) if rss else 0
    return ticks / os.sysconf("SC_CLK_TCK"), rss_kb * 1024


def machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far, from /proc/stat (idle and iowait are not busy)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks[:8])  # user .. steal; guest time is counted within user already
    return total - ticks[3] - ticks[4], total


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (children found by their parent id in /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, i = [pid], 0
    while i < len(tree):
        tree.extend(children.get(tree[i], []))
        i += 1
    return tree


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds used so far by each of these processes that is still there."""
    out = {}
    for pid in pids:
        try:
            out[pid] = proc_stats(pid)[0]
        except OSError:  # exited
            continue
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes there at both readings used between them, together."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of samples, by the nearest rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Metric by metric, the median over repeated runs."""
    return {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    """Floats to three decimals, for printing."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def metrics_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a member process gets METRICS_PORT + its index)."""
    for _ in range(50):
        first = free_port()
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")
