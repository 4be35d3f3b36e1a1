"""Renewal: how many keys one messenger keeps servable at the default TTL, with zero lapses.

    python -m bench.renewal [--keys 12620,50000,100000] [--seconds 8]

A private redis-server; in this process, the messenger's real book and Redis writer with
``keys`` quiet values (none changes: the worst case for keeping them servable) on connections of
1,024 streams each, every connection heard from all the time (its pongs). A checker reads every
key through the server's own read rule (contract.servable) over and over for ``seconds``;
a key found not servable is a lapse. Reported: lapses, the writer thread's CPU (share of one
core) and the Redis writes per second (SET and PEXPIRE) it takes to keep them all servable.

The baseline, side by side on the same Redis and keys: the previous design, which renewed each
value within its TTL (one ``SET key value PX ttl`` per key every third of the TTL, packed in
batches of 1,000 per round trip, as the old writer did), checked with a plain ``MGET``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from contract.keys import snapshot_key
from contract.records import encode_record
from contract.servable import CurrentReader
from contract.settings import Settings
from messenger.book import Book
from messenger.writer import Writer
from tests.processes import RedisServer

TTL_MS = Settings().snapshot_ttl_ms
STREAMS_PER_CONNECTION = 1024
CHECK_BATCH = 2000
_ids = itertools.count(1)


@dataclass(eq=False)
class Conn:
    """A connection as the book sees it: an id and when it was last heard."""

    last_heard: float = field(default_factory=time.monotonic)
    id: int = field(default_factory=lambda: next(_ids))


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds a thread of this process has used, from /proc."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commands(client: redis.Redis) -> int:
    """Writes Redis has processed since it started (SET and PEXPIRE: the checker only reads)."""
    stats: Any = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("set", "pexpire"))


def keys_of(n: int) -> list[str]:
    """``n`` distinct snapshot keys, as many symbols times kinds would give."""
    return [snapshot_key("bookticker", f"SYM{i:06d}USDT") for i in range(n)]


def value(i: int) -> dict[str, Any]:
    """A bookTicker record's fields."""
    return {"symbol": f"SYM{i:06d}USDT", "bid_price": "1.00000000", "bid_quantity": "2.00000000",
            "ask_price": "1.00010000", "ask_quantity": "3.00000000", "update_id": i}  # fmt: skip


def check(read: Callable[[list[str]], list[bool]], keys: list[str], seconds: float) -> tuple[int, int, float]:
    """Read every key over and over for ``seconds``: (key checks, lapses, seconds per full pass)."""
    checks = lapses = passes = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        for i in range(0, len(keys), CHECK_BATCH):
            found = read(keys[i : i + CHECK_BATCH])
            checks += len(found)
            lapses += found.count(False)
        passes += 1
    return checks, lapses, (time.monotonic() - started) / max(passes, 1)


def run_vouched(server: RedisServer, n: int, seconds: float) -> dict[str, float]:
    """The messenger's writer: one liveness key per connection, records named after it."""
    client = server.client()
    client.flushall()
    book = Book(liveness_timeout_s=Settings().liveness_timeout_ms / 1000)
    writer = Writer(book, redis.Redis.from_url(server.url), TTL_MS, TTL_MS / 3000, "bench")
    keys = keys_of(n)
    conns = [Conn() for _ in range(0, n, STREAMS_PER_CONNECTION)]
    for c, conn in enumerate(conns):
        mine = keys[c * STREAMS_PER_CONNECTION : (c + 1) * STREAMS_PER_CONNECTION]
        book.assign(conn, mine)
        book.carry(conn, mine, time.monotonic())
        for j, key in enumerate(mine):
            i = c * STREAMS_PER_CONNECTION + j
            book.on_frame(conn, key, i, value(i), time.monotonic())
    stop = threading.Event()

    def pongs() -> None:
        while not stop.wait(0.05):
            now = time.monotonic()
            for conn in conns:
                conn.last_heard = now

    heard = threading.Thread(target=pongs, daemon=True)
    heard.start()
    writer.start()
    reader = CurrentReader(client)

    def servable(batch: list[str]) -> list[bool]:
        flat = reader(batch)
        return [raw is not None for raw in flat[0::2]]

    try:
        _wait_all(servable, keys)
        cpu0, cmd0, t0 = thread_cpu_s(_native_id(writer)), commands(client), time.monotonic()
        checks, lapses, pass_s = check(servable, keys, seconds)
        wall = time.monotonic() - t0
        cpu = thread_cpu_s(_native_id(writer)) - cpu0
        cmds = commands(client) - cmd0
    finally:
        stop.set()
        writer.stop()
        client.close()
    return _row(n, checks, lapses, cpu / wall, cmds / wall, pass_s)


def run_per_value(server: RedisServer, n: int, seconds: float) -> dict[str, float]:
    """The previous design: every value rewritten with its TTL every third of the TTL."""
    client = server.client()
    client.flushall()
    keys = keys_of(n)
    values = [encode_record(value(i)) for i in range(n)]
    stop, first_round = threading.Event(), threading.Event()
    pool = redis.Redis.from_url(server.url).connection_pool
    native: list[int] = []

    def renew() -> None:
        native.append(threading.get_native_id())
        conn = pool.get_connection()
        try:
            while not stop.is_set():
                round_started = time.monotonic()
                for i in range(0, n, 1000):
                    batch = [
                        ("SET", k, v, "PX", TTL_MS)
                        for k, v in zip(keys[i : i + 1000], values[i : i + 1000], strict=True)
                    ]
                    conn.send_packed_command(conn.pack_commands(batch))
                    for _ in batch:
                        conn.read_response()
                first_round.set()
                stop.wait(max(0.0, TTL_MS / 3000 - (time.monotonic() - round_started)))
        finally:
            pool.release(conn)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()

    def servable(batch: list[str]) -> list[bool]:
        return [raw is not None for raw in client.mget(batch)]

    try:
        first_round.wait(60)  # it may never have them all servable at once: that is the finding
        cpu0, cmd0, t0 = thread_cpu_s(native[0]), commands(client), time.monotonic()
        checks, lapses, pass_s = check(servable, keys, seconds)
        wall = time.monotonic() - t0
        cpu = thread_cpu_s(native[0]) - cpu0
        cmds = commands(client) - cmd0
    finally:
        stop.set()
        renewer.join(5)
        pool.disconnect()
        client.close()
    return _row(n, checks, lapses, cpu / wall, cmds / wall, pass_s)


def _wait_all(servable: Callable[[list[str]], list[bool]], keys: list[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(all(servable(keys[i : i + CHECK_BATCH])) for i in range(0, len(keys), CHECK_BATCH)):
            return
        time.sleep(0.1)
    raise TimeoutError("not every key became servable")


def _native_id(writer: Writer) -> int:
    native = writer._thread.native_id
    assert native is not None
    return native


def _row(
    n: int, checks: int, lapses: int, cpu_share: float, cmds_per_s: float, pass_s: float
) -> dict[str, float]:
    return {"keys": n, "key_checks": checks, "lapses": lapses, "writer_cpu_share": cpu_share,
            "redis_writes_per_s": cmds_per_s, "seconds_per_check_pass": pass_s}  # fmt: skip


def run(key_counts: list[int], seconds: float) -> list[dict[str, Any]]:
    """Both designs at each size, side by side on one private redis-server."""
    rows = []
    with tempfile.TemporaryDirectory() as logs:
        server = RedisServer(Path(logs))
        server.start()
        try:
            for n in key_counts:
                ours = run_vouched(server, n, seconds)
                base = run_per_value(server, n, seconds)
                rows.append({"keys": n, "vouched": ours, "per_value": base})
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", default="12620,50000,100000")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    counts = [int(k) for k in args.keys.split(",")]
    print(json.dumps(run(counts, args.seconds), indent=1))


if __name__ == "__main__":
    main()
