"""Members: what running the messenger as several processes costs and buys, and how fast a killed
member's symbols are served again.

    python -m bench.members [--symbols 100,2000] [--seconds 5] [--repeats 3]
                            [--kills 10] [--liveness-ms 2000] [--failover-symbols 12]

Ingest: ``python -m messenger --processes 1`` and ``--processes 2`` take turns, in every repeat, on
the same flood (the cheap feed, bench/feed.py: bookTicker for N pinned symbols, as fast as they
read), as bench/ingest.py measures a reader. The steady window starts once the members have split
the streams (each member's heartbeat seeing every member and handing nothing over, every stream
carried live by exactly one member). Over it: CPU microseconds per frame summed over every process
of the messenger (the launcher and its members), frames per second into the book and Redis (the
members' metrics: frames of streams they carry), the feed's and Redis's share of a core, and how
busy the machine was (the three together, in cores); and ``extra_streams``, how many more streams
the feed holds than there are symbols (a member left subscribed to a stream it no longer carries:
its frames are read and dropped). Then the flood stops and every symbol's value in Redis must
become the last one sent, and every frame sent must have been read (counted from once the streams
are split, with the flood paused: a member drops uncounted what trails the UNSUBSCRIBE of a
stream it hands over, and what comes for a stream it stayed subscribed to). Targets (issue 15):
CPU per frame with 2 processes within 1.1x of 1 process, and more frames/s with 2 whenever the
flood source is not the limit.

Failover: 3 members pinning the same symbols (``REPLICAS=1``), the server as shipped
(gunicorn), a client polling the symbols of the member carrying the most, every 20 ms on a
kept-alive connection. That member is SIGKILLed; measured: the time from the kill until every one
of its symbols has answered 200 again after failing (they fail once its vouchers expire, after
``SNAPSHOT_TTL_MS``), and each symbol's longest run of other answers. A new member then joins, the
streams spread over 3 again (every heartbeat seeing 3 members and handing nothing over: while a
stream is handed over its old owner still carries it), and the next kill follows: ``kills``
times, median and worst, against the bound ``LIVENESS_TIMEOUT_MS`` + 1 s (the members run with
``--liveness-ms``, 2 s unless told: the setting's default of 5 s would only add 3 s to a kill).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.ingest import SATURATED, settle, symbols_for
from bench.readers import MESSENGER
from bench.sources import FeedProcess, FeedSource, Source
from bench.stack import (
    cpu_between,
    cpu_by_pid,
    metrics_ports,
    process_tree,
    rounded,
    running,
    trading_symbols,
)
from contract.keys import LIVE, member_streams_key, snapshot_key
from contract.members import heartbeats, live_members
from tests.processes import (
    Gunicorn,
    Messenger,
    RedisServer,
    Simulator,
    http,
    messenger_env,
    wait_until,
)

WARM_S = 1.0  # once the streams are split: a steady flood
PROCESSES = (1, 2)
POLL_S = 0.02
# The failover's members' LIVENESS_TIMEOUT_MS: shorter than the setting's default (5 s) to keep 10
# kills within a minute; what the bound adds to it (1 s) is what is measured.
LIVENESS_MS = 2000


def member_frames(port: int) -> tuple[float, float]:
    """(frames of streams a member carries, frames of a stream it does not: unrouted) it has read,
    from its metrics. A member also drops, uncounted, what trails the UNSUBSCRIBE of a stream it
    handed over."""
    text = http("GET", f"http://127.0.0.1:{port}/metrics")[2]
    routed = unrouted = 0.0
    for line in text.splitlines():
        if line.startswith("transmute_messenger_frames_total{"):
            routed += float(line.rsplit(" ", 1)[1])
        elif line.startswith("transmute_messenger_frames_unrouted_total "):
            unrouted += float(line.rsplit(" ", 1)[1])
    return routed, unrouted


def routed(ports: list[int]) -> float:
    """Frames of the streams they carry that the members have read, together."""
    return sum(member_frames(port)[0] for port in ports)


def settled(client: redis.Redis, count: int) -> tuple[list[str], list[dict[str, Any]]]:
    """(the live members, their heartbeats) if there are ``count``, each seeing them all, handing
    nothing over and subscribed to every stream it wants; else ([], [])."""
    members, beats = heartbeats(client)
    if len(members) == len(beats) == count and all(
        len(b["view"]) == count and not b["handing_over"] and b["streams"] == b["streams_wanted"]
        for b in beats
    ):
        return members, beats
    return [], []


def split(client: redis.Redis, source: Source, processes: int, keys: list[str]) -> bool:
    """``processes`` live members, each seeing them all and handing nothing over, each stream
    carried live by exactly one, every key written, and the source holding each stream."""
    members, beats = settled(client, processes)
    if not beats or sum(b["streams_wanted"] for b in beats) != len(keys):
        return False
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.hgetall(member_streams_key(member))
    held = pipe.execute()
    counts = Counter(k.decode() for streams in held for k, v in streams.items() if v.decode() == LIVE)
    return (
        set(counts) == set(keys)
        and set(counts.values()) == {1}
        and client.exists(*keys) == len(keys)
        and source.streams() >= len(keys)  # more: a stream left subscribed (extra_streams)
    )


def drained(ports: list[int]) -> float:
    """With the flood stopped: the frames the members have read, once no more come in (two
    readings 0.2 s apart agree)."""
    last = -1.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        read = sum(sum(member_frames(port)) for port in ports)
        if read == last:
            return read
        last = read
        time.sleep(0.2)
    raise AssertionError(f"the members still read frames 30 s after the flood stopped: {last:.0f}")


def measure(
    processes: int, source: Source, symbols: list[str], seconds: float, redis_server: RedisServer,
    rest_url: str, logs: Path,
) -> dict[str, float]:  # fmt: skip
    """One run of ``python -m messenger --processes N``: its steady window's figures."""
    client = redis_server.client()
    client.flushall()
    source.flood(True)
    port = metrics_ports(processes)
    ports = [port + i for i in range(processes)]
    env = {
        "BINANCE_WS_URL": source.ws_url, "BINANCE_REST_URL": rest_url, "REDIS_URL": redis_server.url,
        "METRICS_PORT": str(port), "STATS_INTERVAL_S": "60", "LOG_LEVEL": "WARNING",
        "RECONNECT_MIN_MS": "100", "RECONNECT_MAX_MS": "1000", "WS_TRANSPORT": "websocket-client",
    }  # fmt: skip
    messenger = Messenger(logs, env, *symbols, "--processes", str(processes))
    messenger.start()
    try:
        keys = MESSENGER.keys(symbols)
        try:
            wait_until(lambda: split(client, source, processes, keys), 90, 0.1,
                       what=f"--processes {processes}: each stream carried by one member")  # fmt: skip
        except AssertionError as exc:
            beats = [{k: b.get(k) for k in ("member", "view", "handing_over", "streams", "streams_wanted")}
                     for b in heartbeats(client)[1]]  # fmt: skip
            raise AssertionError(f"{exc}; live members {live_members(client)}, heartbeats {beats}, "
                                 f"the feed's streams {source.streams()}") from None  # fmt: skip
        assert messenger.proc is not None
        assert redis_server.proc is not None
        tree = process_tree(messenger.proc.pid)
        assert len(tree) == (1 if processes == 1 else 1 + processes), tree
        others = (source.pid, redis_server.proc.pid)
        # Frames are counted from here, with nothing in flight: what a member drops while it
        # hands streams over at the start (trailing its UNSUBSCRIBE, uncounted) is left out.
        source.flood(False)
        read_before = drained(ports)
        sent_before = source.frames_sent()
        source.flood(True)
        time.sleep(WARM_S)
        cpu0, others0 = cpu_by_pid(tree), cpu_by_pid(others)
        extra_streams = source.streams() - len(symbols)
        frames0, t0 = routed(ports), time.monotonic()
        time.sleep(seconds)
        cpu1, others1 = cpu_by_pid(tree), cpu_by_pid(others)
        frames1, elapsed = routed(ports), time.monotonic() - t0
        source.flood(False)
        frames = max(1.0, frames1 - frames0)
        members_cpu = cpu_between(cpu0, cpu1)
        source_cpu = others1[source.pid] - others0[source.pid]
        redis_cpu = others1[redis_server.proc.pid] - others0[redis_server.proc.pid]
        result = {
            "cpu_us_per_frame": 1e6 * members_cpu / frames,
            "frames_per_s": frames / elapsed,
            "members_cpu_share": members_cpu / elapsed,
            "source_cpu_share": source_cpu / elapsed,
            "redis_cpu_share": redis_cpu / elapsed,
            "busy_cores": (members_cpu + source_cpu + redis_cpu) / elapsed,
            "extra_streams": float(extra_streams),
        }
        result["wrong"], result["settle_s"] = settle(MESSENGER, source, client, symbols)
        read_after = drained(ports)
        result["frames_lost"] = (source.frames_sent() - sent_before) - (read_after - read_before)
        return result
    finally:
        messenger.stop()
        client.close()


def summarize(n: int, source: str, runs: dict[int, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per process count and metric (the worst for what must be zero), and the ratios of
    2 processes to 1."""
    row: dict[str, Any] = {"symbols": n, "source": source, "cores": os.cpu_count() or 1}
    for processes, samples in runs.items():
        for metric in samples[0]:
            values = [s[metric] for s in samples]
            worst = metric in ("wrong", "frames_lost", "extra_streams")
            row[f"p{processes}_{metric}"] = max(values) if worst else statistics.median(values)
        row[f"p{processes}_source_saturated"] = max(s["source_cpu_share"] for s in samples) >= SATURATED
    row["cpu_ratio_2_to_1"] = row["p2_cpu_us_per_frame"] / row["p1_cpu_us_per_frame"]
    row["rate_ratio_2_to_1"] = row["p2_frames_per_s"] / row["p1_frames_per_s"]
    return row


def run_ingest(
    counts: list[int], seconds: float, repeats: int, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Every count, 1 and 2 processes in turn (the order alternating), ``repeats`` times."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server = RedisServer(logs)
        sim = Simulator(logs, *trading_symbols(max(counts)))  # exchangeInfo, REST seeds
        feed = FeedProcess(logs, "--no-flood")
        with running(redis_server, sim, feed):
            source = FeedSource(feed)
            for n in counts:
                symbols = symbols_for(sim, n)
                runs: dict[int, list[dict[str, float]]] = {p: [] for p in PROCESSES}
                for r in range(repeats):
                    for processes in PROCESSES if r % 2 == 0 else PROCESSES[::-1]:
                        runs[processes].append(
                            measure(processes, source, symbols, seconds, redis_server, sim.rest_url, logs)
                        )
                        if progress is not None:
                            progress(f"members ingest: {n} symbols, --processes {processes}: "
                                     f"{rounded(runs[processes][-1])}")  # fmt: skip
                results.append(summarize(n, source.name, runs))
    return results


class Poller:
    """Asks for some symbols every POLL_S on one kept-alive connection; keeps (time, symbol, status)."""

    def __init__(self, port: int, symbols: list[str]) -> None:
        self.answers: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port, symbols), daemon=True)
        self._thread.start()

    def _run(self, port: int, symbols: list[str]) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=5)
        while not self._stop.is_set():
            for symbol in symbols:
                conn.request("POST", f"/snapshot/{symbol}")
                response = conn.getresponse()
                response.read()
                self.answers.append((time.monotonic(), symbol, response.status))
            self._stop.wait(POLL_S)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def recovery(
    answers: list[tuple[float, str, int]], symbols: list[str], killed_at: float
) -> tuple[float, float] | None:
    """(seconds from the kill until every symbol answered 200 after failing, the longest run of
    other answers of any symbol), or None while some symbol has not failed and come back."""
    failed: dict[str, float] = {}  # symbol -> when its current run of failures began
    back: dict[str, float] = {}  # symbol -> its first 200 after its last failure
    longest = 0.0
    for at, symbol, status in answers:
        if at < killed_at:
            continue
        if status != 200:
            failed.setdefault(symbol, at)
            back.pop(symbol, None)
        elif symbol in failed and symbol not in back:
            back[symbol] = at
            longest = max(longest, at - failed.pop(symbol))
    if set(back) != set(symbols) or failed:
        return None
    return max(back.values()) - killed_at, longest


def records(client: redis.Redis, symbols: list[str]) -> dict[str, Any]:
    """Each symbol's record as it is now: (who vouches, its update id, ms since it changed)."""
    raw: list[Any] = client.mget([snapshot_key("bookticker", s) for s in symbols])
    now_ms = time.time() * 1000
    out: dict[str, Any] = {}
    for symbol, value in zip(symbols, raw, strict=True):
        doc = orjson.loads(value) if value else {}
        out[symbol] = doc and (doc["voucher"], doc.get("update_id"), round(now_ms - doc["ts"]))
    return out


def stuck(poller: Poller, symbols: list[str], killed_at: float, before: str, now: str) -> str:
    """What each symbol answered since the kill, with who carried it and its record then and now."""
    answered = {
        s: dict(Counter(st for at, sy, st in poller.answers if sy == s and at >= killed_at)) for s in symbols
    }
    return f"answers since the kill {answered}; before the kill {before}; now {now}"


def carriers(client: redis.Redis, symbols: list[str]) -> dict[str, list[str]]:
    """Each symbol -> the live members streaming its bookTicker."""
    members = live_members(client)
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.hkeys(member_streams_key(member))
    held = {m: {k.decode() for k in keys} for m, keys in zip(members, pipe.execute(), strict=True)}
    return {s: [m for m in members if snapshot_key("bookticker", s) in held[m]] for s in symbols}


def run_failover(
    kills: int, liveness_ms: int, n_symbols: int, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """``kills`` SIGKILLs of the member carrying the most of 3; each one's recovery."""
    times: list[float] = []
    outages: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server, sim = RedisServer(logs), Simulator(logs)
        gunicorn = Gunicorn(logs, redis_server.url)
        with running(redis_server, sim, gunicorn):
            client = redis_server.client()
            symbols = symbols_for(sim, n_symbols)
            env = messenger_env(sim, redis_server.url, REPLICAS=1, LIVENESS_TIMEOUT_MS=liveness_ms,
                                LOG_LEVEL="WARNING", STATS_INTERVAL_S=60)  # fmt: skip
            members: list[Messenger] = []

            def join() -> None:
                member = Messenger(logs, env, *symbols)
                member.start()
                members.append(member)

            try:
                for _ in range(3):
                    join()
                for k in range(kills):

                    def ready() -> bool:
                        found = carriers(client, symbols)
                        return (
                            bool(settled(client, 3)[0])  # a kill during a handover kills no sole owner
                            and all(len(m) == 1 for m in found.values())
                            and all(gunicorn.snapshot(s)[0] == 200 for s in symbols)
                        )

                    wait_until(ready, 60, 0.1, what="3 members, each symbol carried by one, all served")
                    found = carriers(client, symbols)
                    owner = Counter(m[0] for m in found.values()).most_common(1)[0][0]
                    pids = {beat["member"]: beat["pid"] for beat in heartbeats(client)[1]}
                    victim = next(m for m in members if m.running() and m.proc and m.proc.pid == pids[owner])
                    orphans = [s for s, m in found.items() if m == [owner]]
                    poller = Poller(gunicorn.port, orphans)
                    time.sleep(0.2)  # answers from before the kill
                    before = f"carriers {found}, records {records(client, orphans)}"
                    killed_at = time.monotonic()
                    victim.kill()
                    try:
                        done = wait_until(lambda: recovery(poller.answers, orphans, killed_at),  # noqa: B023
                                          liveness_ms / 1000 + 30, 0.05,
                                          what=f"kill {k + 1}: {orphans} served again")  # fmt: skip
                    except AssertionError as exc:
                        now = f"carriers {carriers(client, orphans)}, records {records(client, orphans)}"
                        raise AssertionError(
                            f"{exc}; {stuck(poller, orphans, killed_at, before, now)}"
                        ) from None
                    finally:
                        poller.stop()
                    times.append(done[0])
                    outages.append(done[1])
                    if progress is not None:
                        progress(f"members failover: kill {k + 1}: {len(orphans)} symbols served again "
                                 f"after {done[0]:.2f} s (longest outage {done[1]:.2f} s)")  # fmt: skip
                    join()
            finally:
                for member in members:
                    member.stop()
                client.close()
    return {
        "kills": kills,
        "members": 3,
        "symbols": n_symbols,
        "liveness_timeout_ms": liveness_ms,
        "bound_s": liveness_ms / 1000 + 1.0,
        "served_again_median_s": statistics.median(times),
        "served_again_worst_s": max(times),
        "outage_median_s": statistics.median(outages),
        "outage_worst_s": max(outages),
    }


def run(
    counts: list[int], seconds: float, repeats: int, kills: int, liveness_ms: int = LIVENESS_MS,
    failover_symbols: int = 12, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Both parts: ``{"ingest": [a row per symbol count], "failover": {...}}`` (either left out
    when asked for no symbol count or no kill)."""
    out: dict[str, Any] = {}
    if counts:
        out["ingest"] = [rounded(r) for r in run_ingest(counts, seconds, repeats, progress)]
    if kills:
        out["failover"] = rounded(run_failover(kills, liveness_ms, failover_symbols, progress))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.members", description=__doc__)
    parser.add_argument("--symbols", default="100,2000", help="symbol counts; '' for none")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument(
        "--liveness-ms", type=int, default=LIVENESS_MS, help="the members' LIVENESS_TIMEOUT_MS"
    )
    parser.add_argument("--failover-symbols", type=int, default=12)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.symbols.split(",") if n]

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(counts, args.seconds, args.repeats, args.kills, args.liveness_ms, args.failover_symbols, say)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
