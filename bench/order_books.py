"""What keeping full order books costs the messenger: CPU per diff event, memory per book.

    python -m bench.order_books [--symbols 20] [--events 20000] [--changes 20]

Runs the messenger's own path for each diff event in this process, on one thread, as its reader
and writer threads do: the frame parsed from its JSON bytes (messenger.binance), applied to the
symbol's local book (messenger.order_books, messenger.local_book), the record handed to the book
(messenger.book) and encoded as the writer stores it (contract.records), with the tier of levels
written at 100 (the default) and at 1,000. Beside it, the same frames only parsed: the floor any
reader pays. Reports CPU microseconds per event, the share of a core that 1,000 events a second
take, the events a second one core keeps books for, and the memory of one 5,000-level book
(tracemalloc), all measured side by side in one run.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from itertools import count
from typing import Any

import orjson

from contract.keys import snapshot_key
from contract.records import encode_record
from messenger.binance import KINDS
from messenger.book import Book
from messenger.local_book import LocalBook
from messenger.order_books import OrderBooks

TICK = 10**6  # 0.01 in 1e-8 units


class _Conn:
    def __init__(self, n: int) -> None:
        self.id, self.last_heard = n, time.monotonic() + 3600


def _fmt(units: int) -> str:
    return f"{units // 10**8}.{units % 10**8:08d}"


class _Exchange:
    """Deep books for several symbols, changed at random, as Binance's raw diff frames."""

    def __init__(self, symbols: list[str], depth: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.depth = depth
        self.u = dict.fromkeys(symbols, 1)
        self.mid = {s: (20_000 + i) * 10**8 for i, s in enumerate(symbols)}

    def snapshot(self, symbol: str, limit: int) -> dict[str, Any]:
        mid, rng = self.mid[symbol], self.rng
        return {
            "lastUpdateId": self.u[symbol],
            "bids": [[_fmt(mid - (i + 1) * TICK), _fmt(rng.randrange(1, 10**9))] for i in range(limit)],
            "asks": [[_fmt(mid + (i + 1) * TICK), _fmt(rng.randrange(1, 10**9))] for i in range(limit)],
        }

    def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """``GET /api/v3/depth``, as the order books call it."""
        return self.snapshot(params["symbol"], int(params["limit"]))

    def frame(self, symbol: str, changes: int) -> bytes:
        rng, mid = self.rng, self.mid[symbol]
        first = self.u[symbol] + 1
        self.u[symbol] += changes
        sides: tuple[list[list[str]], list[list[str]]] = ([], [])
        for _ in range(changes):
            side = rng.randrange(2)
            at = rng.randrange(1, 200)  # near the top, where books change
            price = mid - at * TICK if side == 0 else mid + at * TICK
            qty = "0.00000000" if rng.random() < 0.3 else _fmt(rng.randrange(1, 10**9))
            sides[side].append([_fmt(price), qty])
        data = {"e": "depthUpdate", "E": 1, "s": symbol, "U": first, "u": self.u[symbol],
                "b": sides[0], "a": sides[1]}  # fmt: skip
        return orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": data})


def _cpu_per_event(symbols: list[str], frames: list[tuple[str, bytes]], exchange: _Exchange,
                   levels: int | None) -> float:  # fmt: skip
    """CPU us per event: parsed only (levels None), or kept in books and encoded at ``levels``."""
    parse = KINDS["depth"].parse
    book = Book(3600.0)
    books = OrderBooks(book, exchange, 5000, levels=lambda: dict.fromkeys(symbols, levels or 100))  # type: ignore[arg-type]
    conn = _Conn(1)
    keys = {s: snapshot_key("depth", s) for s in symbols}
    books.follow(keys)
    book.assign(conn, list(keys.values()))
    book.carry(conn, list(keys.values()), 0.0)
    books._retier()
    now = time.monotonic()
    firsts: dict[str, bytes] = {}
    for symbol, raw in frames:
        firsts.setdefault(symbol, raw)
    for symbol in symbols:  # in sync before the clock starts: the snapshot is at the first frame's U
        _, fields = parse(orjson.loads(firsts[symbol])["data"], symbol)
        books.event(conn, symbol, fields, now)
        exchange.u[symbol] = fields["first_update_id"]
        books._tokens = 1e9
        due = books._next_due()
        assert due is not None
        books._sync(due)
    book.take(now, None)
    gc.collect()
    started = time.process_time()
    for i, (symbol, raw) in enumerate(frames):
        msg = orjson.loads(raw)
        _, fields = parse(msg["data"], symbol)
        if levels is None:
            continue
        books.event(conn, symbol, fields, now)
        if i % len(symbols) == len(symbols) - 1:  # the writer takes a batch now and then
            for write in book.take(now, None).writes:
                encode_record({"voucher": "transmute:voucher:x:1", **write.fields, "ts": 1, "as_of": 1})
    return (time.process_time() - started) / len(frames) * 1e6


def book_memory(levels: int = 5000) -> int:
    """Bytes one local book of ``levels`` levels a side holds (tracemalloc)."""
    exchange = _Exchange(["BTCUSDT"], levels, 1)
    doc = exchange.snapshot("BTCUSDT", levels)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = LocalBook(doc, 5000)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(book) == 2 * levels
    return after - before


def run(symbols: int = 20, events: int = 20_000, changes: int = 20, seed: int = 1) -> dict[str, Any]:
    """The figures, side by side in one run."""
    names = [f"SYM{i}USDT" for i in range(symbols)]
    make = count()
    results: dict[str, Any] = {"symbols": symbols, "events": events, "changes_per_event": changes}
    for label, levels in (("parse_only", None), ("levels_100", 100), ("levels_1000", 1000)):
        exchange = _Exchange(names, 5000, seed + next(make))
        frames = [(names[i % symbols], exchange.frame(names[i % symbols], changes)) for i in range(events)]
        results[f"{label}_cpu_us_per_event"] = _cpu_per_event(names, frames, exchange, levels)
    for label in ("levels_100", "levels_1000"):
        us = results[f"{label}_cpu_us_per_event"]
        results[f"{label}_core_share_per_1000_events_s"] = us * 1000 / 1e6
        results[f"{label}_events_per_core_s"] = 1e6 / us
        results[f"{label}_over_parse_only"] = us / results["parse_only_cpu_us_per_event"]
    results["book_5000_levels_bytes"] = book_memory(5000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=20, help="levels changed per diff event")
    args = parser.parse_args()
    result = run(args.symbols, args.events, args.changes)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
