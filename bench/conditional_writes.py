"""Conditional writes: what a record costs written through the script, against a plain SET.

    python -m bench.conditional_writes [--symbols 100] [--frames 200] [--batches 400] [--repeats 3]
                                       [--pad 0]

A private redis-server; in this process, the messenger's real book and Redis writer. Each batch
is ``frames`` bookTicker frames for ``symbols`` symbols (round robin, each newer than the last),
parsed as the messenger parses them (orjson, messenger.binance) and applied to the book; then the
writer takes the batch and writes it in one round trip, on this thread, so that every phase's CPU
is counted exactly (thread CPU time), and Redis's (``INFO cpu``, its own count). The modes take
turns every 20 batches (each on keys of its own), so that a busy machine weighs on each alike:

- ``plain``: the writer as it was before conditional writes: ``SET key record PX ttl`` per record
  (its ``write`` as it was, kept here);
- ``conditional``: the writer through messenger.conditional's script, one EVALSHA per batch (as
  when another messenger writes too: alone, the writer now writes plain SETs instead,
  messenger.sole_writer, measured by bench.freshness);
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

from contract.keys import (
    CONTROL_TAG,
    RECORD_TTL_MS,
    key_tag,
    member_key,
    member_streams_key,
    snapshot_key,
    voucher_key,
)
from contract.ordering import encode_order
from contract.records import AS_OF, ORDER, TS, VOUCHER, encode_record
from contract.resp import command
from messenger.binance import BOOK_TICKER
from messenger.book import Batch, Book
from messenger.resp import set_px
from messenger.writer import MAX_WRITE_INTERVAL_S, MIN_WRITE_INTERVAL_S, Writer
from tests.processes import RedisServer

TTL_MS = 3000
MODES = ("plain", "conditional", "conditional, 2 members")
WARM_BATCHES = 10
BLOCK = 20  # batches a mode runs before the next one takes its turn


class Conn:
    """A connection as the book sees it, always heard from."""

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.last_heard = time.monotonic()


class PlainWriter(Writer):
    """The writer's batch as it was before conditional writes (git 2c3b268's ``Writer.write``, the
    record's ``order`` added so that the same bytes are written): ``SET key record PX ttl`` each."""

    def write(self, batch: Batch) -> None:
        started = time.monotonic()
        offset_ms = (time.time() - started) * 1000
        commands: list[bytes] = []
        add = commands.append
        watched = self.watched()
        if batch.deletes:
            add(command("DEL", *batch.deletes))
            commands.extend(command("PUBLISH", key, b"") for key in batch.deletes if key in watched)
        ttl, messenger = self.ttl_ms, self.messenger_id
        # A voucher a bucket, as the writer's (contract.keys).
        for w in batch.writes:
            self._tagged.setdefault(w.connection, set()).add(key_tag(w.key))
        for conn_id, heard in batch.vouchers.items():
            heard_ms = int(heard * 1000 + offset_ms)
            for tag in self._tagged.get(conn_id, ()):
                add(command("SET", voucher_key(messenger, conn_id, tag), heard_ms, "PX", ttl))
        record_ttl = b"%d" % RECORD_TTL_MS
        for w in batch.writes:
            key = w.key.encode()
            if w.renew:
                add(command("PEXPIRE", key, record_ttl))
                continue
            voucher = voucher_key(messenger, w.connection, key_tag(w.key))
            record = {
                VOUCHER: voucher,
                ORDER: encode_order(w.order),
                **w.fields,
                TS: int(w.changed * 1000 + offset_ms),
                AS_OF: int(max(w.heard, w.changed) * 1000 + offset_ms),
                "source": w.source,
                "connection": w.connection,
            }
            value = encode_record(record)
            add(set_px(key, value, record_ttl))
            if w.key in watched:
                for _, closed in w.superseded:
                    add(command("PUBLISH", key, encode_record({**record, **closed})))
                add(command("PUBLISH", key, value))
        for conn_id in batch.retired_vouchers:
            for tag in self._tagged.pop(conn_id, ()):
                add(command("DEL", voucher_key(messenger, conn_id, tag)))
        if batch.streams_complete:
            add(command("DEL", member_streams_key(self.messenger_id)))
        states = [item for k, v in batch.streams.items() if v is not None for item in (k, v)]
        if states:
            add(command("HSET", member_streams_key(self.messenger_id), *states))
        dropped = [k for k, v in batch.streams.items() if v is None]
        if dropped:
            add(command("HDEL", member_streams_key(self.messenger_id), *dropped))
        if batch.heartbeat is not None:
            heartbeat = {**batch.heartbeat, "ts": int(time.time() * 1000)}
            add(command("SET", member_key(self.messenger_id), encode_record(heartbeat), "PX", ttl))
        self._send(commands, [CONTROL_TAG] * len(commands), batch.streams_complete)  # one Redis
        done = self._last_write = time.monotonic()
        self._interval = min(MAX_WRITE_INTERVAL_S, max(MIN_WRITE_INTERVAL_S, done - started))
        for w in batch.writes:
            if w.update:
                self.latency.observe(done - w.changed)
        self.writes += len(batch.writes)
        self.deletes += len(batch.deletes)
        self.batches += 1
        self.healthy = True
        self._backoff.reset()


class Member:
    """One messenger's book and writer, carrying every key on one connection."""

    def __init__(self, client: redis.Redis, run: str, keys: list[str], plain: bool) -> None:
        self.book = Book(liveness_timeout_s=60.0)
        self.conn = Conn(1)
        cls = PlainWriter if plain else Writer
        self.writer = cls(self.book, client, TTL_MS, TTL_MS / 3000, run)
        self.writer.alone = lambda: False  # the script always, alone or not (messenger.sole_writer)
        self.book.assign(self.conn, keys)
        self.book.carry(self.conn, keys, 0.0)
        self.everything = True  # a writer's first batch on a new connection is a full rewrite

    def write(self) -> int:
        """Take and write what changed; returns the records written."""
        batch = self.book.take(time.monotonic(), None, self.everything, announce=True)
        self.writer.write(batch)
        self.everything = False
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


class ModeRun:
    """One mode's messengers and counts, run a block of batches at a time (modes take turns)."""

    def __init__(self, mode: str, client: redis.Redis, symbols: list[str], run_no: int, pad: int) -> None:
        self.mode, self.client, self.symbols = mode, client, symbols
        # Keys of its own, so that the modes share one Redis and take turns block by block.
        self.keys = {s: snapshot_key(BOOK_TICKER.key_kind, f"{MODES.index(mode)}{s}") for s in symbols}
        plain = mode == "plain"
        self.members = [Member(client, f"run{run_no:02d}a", list(self.keys.values()), plain)]
        if mode.endswith("2 members"):
            self.members.append(Member(client, f"run{run_no:02d}b", list(self.keys.values()), plain))
        self.padding = "x" * pad
        self.u = 1
        self.feed_cpu = self.write_cpu = self.redis_cpu = 0.0
        self.frames = self.records = 0

    def block(self, batches: int, frames: int, count: bool = True) -> None:
        """``batches`` batches of ``frames`` frames: each phase's CPU and Redis's, if ``count``."""
        parse: Callable[[Any, str], Any] = BOOK_TICKER.parse
        keys, padding = self.keys, self.padding
        feed_cpu = write_cpu = 0.0
        frames_in = records = 0
        redis_cpu0 = redis_cpu_s(self.client)
        for _ in range(batches):
            payloads = frames_for(self.symbols, self.u, frames)
            self.u += frames
            t0 = time.thread_time()
            now = time.monotonic()
            for member in self.members:
                member.conn.last_heard = now
                for symbol, raw in payloads:
                    order, fields = parse(orjson.loads(raw), symbol)
                    if padding:
                        fields["levels"] = padding
                    member.book.on_frame(member.conn, keys[symbol], order, fields, now)
            t1 = time.thread_time()
            for member in self.members:
                records += member.write()
            t2 = time.thread_time()
            feed_cpu += t1 - t0
            write_cpu += t2 - t1
            frames_in += frames * len(self.members)
        if count:
            self.redis_cpu += redis_cpu_s(self.client) - redis_cpu0
            self.feed_cpu += feed_cpu
            self.write_cpu += write_cpu
            self.frames += frames_in
            self.records += records

    def row(self) -> dict[str, Any]:
        """Its figures so far."""
        return {
            "frames": self.frames,
            "records": self.records,
            "messenger_cpu_us_per_frame": (self.feed_cpu + self.write_cpu) / self.frames * 1e6,
            "parse_and_book_cpu_us_per_frame": self.feed_cpu / self.frames * 1e6,
            "writer_cpu_us_per_frame": self.write_cpu / self.frames * 1e6,
            "writer_cpu_us_per_record": self.write_cpu / self.records * 1e6,
            "redis_cpu_us_per_record": self.redis_cpu / self.records * 1e6,
        }


def run(symbols: int, frames: int, batches: int, repeats: int, pad: int = 0) -> dict[str, Any]:
    """Every mode against one redis-server, taking turns every BLOCK batches (so that whatever
    else the machine does weighs on each alike), ``repeats`` times; medians per mode."""
    names = [f"SYM{i:05d}USDT" for i in range(symbols)]
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            client = server.client()
            for r in range(repeats):
                client.flushall()
                runs = [ModeRun(mode, client, names, r, pad) for mode in MODES]
                for run_ in runs:
                    run_.block(WARM_BATCHES, frames, count=False)  # every key written, the script loaded
                for start in range(0, batches, BLOCK):
                    for run_ in runs:
                        run_.block(min(BLOCK, batches - start), frames)
                for run_ in runs:
                    rows[run_.mode].append(run_.row())
            client.close()
        finally:
            server.stop()
    medians = {
        mode: {k: statistics.median(row[k] for row in found) for k in found[0]}
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


# What ``make bench`` runs (bench/run.py): (symbols, frames per batch, batches, pad bytes). One
# record a batch (a quiet market: the script's fixed cost per batch), ~150 records a batch (a busy
# one), and 6 KB records (an order book of 100 levels, staged and renamed by the script).
VARIANTS = ((1, 1, 2000, 0), (150, 150, 400, 0), (100, 200, 400, 6000))


def run_variants(repeats: int, quick: bool = False) -> list[dict[str, Any]]:
    """Each of VARIANTS (a quarter of the batches if ``quick``), with the records a batch wrote."""
    rows = []
    for symbols, frames, batches, pad in VARIANTS:
        row = run(symbols, frames, batches // 4 if quick else batches, repeats, pad)
        row["records_per_batch"] = row["modes"]["plain"]["records"] / row["batches"]
        rows.append(row)
    return rows


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
