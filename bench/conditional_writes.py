"""Conditional writes: what a record costs written through the script, against a plain SET.

    python -m bench.conditional_writes [--symbols 100] [--frames 200] [--batches 400] [--repeats 3]
                                       [--pad 0]

A private redis-server; in this process, the messenger's real book and Redis writer. Each batch
is ``frames`` bookTicker frames for ``symbols`` symbols (round robin, each newer than the last),
parsed as the messenger parses them (orjson, messenger.binance) and applied to the book; then the
writer takes the batch and writes it in one round trip, on this thread, so that every phase's CPU
is counted exactly (thread CPU time), and Redis's (``INFO cpu``, its own count). Modes take turns
in every repeat:

- ``plain``: the writer as it was before conditional writes: ``SET key record PX ttl`` per record;
- ``conditional``: the writer now: one EVALSHA of messenger.conditional's script per batch;
- ``conditional, 2 members``: two messengers carrying the same streams, each batch written by
  both (the second one's records are equal to what is stored: its voucher joins them).

With ``--pad N`` each record carries N bytes more (an order book's levels: 6 KB at 100 levels,
60 KB at 1,000): records over messenger.conditional.STAGE_BYTES are staged and renamed into place.

Reported per mode (medians over the repeats): the messenger's CPU per frame (parse and book, and
the writer's share) and per record written, Redis's CPU per record, and the conditional writer's
extra CPU per frame as a share of the messenger's CPU per frame with plain SET.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from contract.keys import RECORD_TTL_MS, snapshot_key, voucher_key
from contract.ordering import encode_order
from contract.records import AS_OF, ORDER, TS, VOUCHER, encode_record
from messenger.binance import BOOK_TICKER
from messenger.book import Batch, Book
from messenger.resp import command, set_px
from messenger.writer import Writer
from tests.processes import RedisServer

TTL_MS = 3000
MODES = ("plain", "conditional", "conditional, 2 members")


class Conn:
    """A connection as the book sees it, always heard from."""

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.last_heard = time.monotonic()


class PlainWriter(Writer):
    """The writer's batch before conditional writes: a plain ``SET key record PX ttl`` per record."""

    def write(self, batch: Batch) -> None:
        started = time.monotonic()
        offset_ms = (time.time() - started) * 1000
        commands: list[bytes] = []
        add = commands.append
        messenger = self.messenger_id
        for conn_id, heard in batch.vouchers.items():
            heard_ms = int(heard * 1000 + offset_ms)
            add(command("SET", voucher_key(messenger, conn_id), heard_ms, "PX", self.ttl_ms))
        record_ttl = b"%d" % RECORD_TTL_MS
        for w in batch.writes:
            record = {
                VOUCHER: voucher_key(messenger, w.connection),
                ORDER: encode_order(w.order),  # the same bytes as the conditional record's
                **w.fields,
                TS: int(w.changed * 1000 + offset_ms),
                AS_OF: int(max(w.heard, w.changed) * 1000 + offset_ms),
                "source": w.source,
                "connection": w.connection,
            }
            add(set_px(w.key.encode(), encode_record(record), record_ttl))
        self._send(commands)
        self.writes += len(batch.writes)


class Member:
    """One messenger's book and writer, carrying every key on one connection."""

    def __init__(self, client: redis.Redis, run: str, keys: list[str], plain: bool) -> None:
        self.book = Book(liveness_timeout_s=60.0)
        self.conn = Conn(1)
        cls = PlainWriter if plain else Writer
        self.writer = cls(self.book, client, TTL_MS, TTL_MS / 3000, run)
        self.book.assign(self.conn, keys)
        self.book.carry(self.conn, keys, 0.0)

    def write(self) -> int:
        """Take and write what changed; returns the records written."""
        batch = self.book.take(time.monotonic(), None, announce=True)
        self.writer.write(batch)
        return len(batch.writes)


def redis_cpu_s(client: redis.Redis) -> float:
    """CPU seconds redis-server has used (its own count, in microseconds: finer than /proc's ticks)."""
    cpu: Any = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def frames_for(symbols: list[str], start: int, n: int) -> list[tuple[str, bytes]]:
    """``n`` bookTicker payloads, round robin over ``symbols``, update ids from ``start``."""
    out = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        u = start + i
        payload = {"u": u, "s": symbol, "b": f"{u % 1000}.01000000", "B": "31.21000000",
                   "a": f"{u % 1000}.02000000", "A": "40.66000000"}  # fmt: skip
        out.append((symbol, orjson.dumps(payload)))
    return out


def run_mode(
    mode: str, server: RedisServer, symbols: list[str], frames: int, batches: int, run_no: int, pad: int = 0
) -> dict[str, Any]:
    """One mode: ``batches`` batches of ``frames`` frames; CPU of each phase and of Redis."""
    client = server.client()
    client.flushall()
    keys = {s: snapshot_key(BOOK_TICKER.key_kind, s) for s in symbols}
    plain = mode == "plain"
    padding = "x" * pad
    members = [Member(client, f"run{run_no:02d}a", list(keys.values()), plain)]
    if mode.endswith("2 members"):
        members.append(Member(client, f"run{run_no:02d}b", list(keys.values()), plain))
    parse: Callable[[Any, str], Any] = BOOK_TICKER.parse
    feed_cpu = write_cpu = 0.0
    frames_in = records = 0
    u = 1
    for n in range(batches + 10):
        if n == 10:  # warm: every key written, the script loaded
            feed_cpu = write_cpu = 0.0
            frames_in = records = 0
            redis_cpu0 = redis_cpu_s(client)
        payloads = frames_for(symbols, u, frames)
        u += frames
        t0 = time.thread_time()
        now = time.monotonic()
        for member in members:
            member.conn.last_heard = now
            for symbol, raw in payloads:
                order, fields = parse(orjson.loads(raw), symbol)
                if pad:
                    fields["levels"] = padding
                member.book.on_frame(member.conn, keys[symbol], order, fields, now)
        t1 = time.thread_time()
        for member in members:
            records += member.write()
        t2 = time.thread_time()
        feed_cpu += t1 - t0
        write_cpu += t2 - t1
        frames_in += frames * len(members)
    redis_cpu = redis_cpu_s(client) - redis_cpu0
    client.close()
    messenger_cpu = feed_cpu + write_cpu
    return {
        "mode": mode,
        "frames": frames_in,
        "records": records,
        "messenger_cpu_us_per_frame": messenger_cpu / frames_in * 1e6,
        "parse_and_book_cpu_us_per_frame": feed_cpu / frames_in * 1e6,
        "writer_cpu_us_per_frame": write_cpu / frames_in * 1e6,
        "writer_cpu_us_per_record": write_cpu / records * 1e6,
        "redis_cpu_us_per_record": redis_cpu / records * 1e6,
    }


def run(symbols: int, frames: int, batches: int, repeats: int, pad: int = 0) -> dict[str, Any]:
    """Every mode, ``repeats`` times in turn against one redis-server; medians per mode."""
    names = [f"SYM{i:05d}USDT" for i in range(symbols)]
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            for r in range(repeats):
                for mode in MODES:
                    rows[mode].append(run_mode(mode, server, names, frames, batches, r, pad))
        finally:
            server.stop()
    medians = {
        mode: {k: statistics.median(row[k] for row in found) for k in found[0] if k != "mode"}
        for mode, found in rows.items()
    }
    plain, conditional = medians["plain"], medians["conditional"]
    extra = conditional["writer_cpu_us_per_frame"] - plain["writer_cpu_us_per_frame"]
    return {
        "symbols": symbols,
        "frames_per_batch": frames,
        "batches": batches,
        "repeats": repeats,
        "pad_bytes": pad,
        "modes": medians,
        "conditional_extra_share_of_messenger_cpu_per_frame": extra / plain["messenger_cpu_us_per_frame"],
        "redis_cpu_ratio_conditional_to_plain": conditional["redis_cpu_us_per_record"]
        / plain["redis_cpu_us_per_record"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.conditional_writes", description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--frames", type=int, default=200, help="frames per batch")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pad", type=int, default=0, help="bytes added to each record")
    args = parser.parse_args()
    print(json.dumps(run(args.symbols, args.frames, args.batches, args.repeats, args.pad), indent=1))


if __name__ == "__main__":
    main()
