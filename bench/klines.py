"""Candles: ``GET /api/v3/klines?limit=1000`` under wrk beside a bare app, and Redis memory per candle.

    python -m bench.klines [--seconds 10] [--connections 50] [--repeats 3]

Serving: a private Redis holds BTCUSDT's 1m history as the messenger keeps it: 999 closed candles
written through contract.klines.WRITE_SCRIPT, and the kline stream's open candle as a record
vouched for by a connection whose liveness key this benchmark keeps rewriting (as the messenger's
writer does, six times per second with a 1 s TTL). Two apps take turns under gunicorn with the
shipped config: the server, and ``bench/bare_klines.py``, which answers the same bytes with one
Redis GET of the pre-rendered answer. wrk drives each with the same connections in every repeat,
and a Lua check counts every answer that is not a 200 with exactly those bytes (1,000 rows).

Memory: ``MEMORY USAGE`` of a kept series of 1,000 real-looking candles (prices with 8 decimals)
for several intervals, and the growth of the whole instance's ``used_memory`` for 100 series.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from bench.bare_klines import KEY as BARE_KEY
from bench.serving import parse_wrk
from bench.stack import medians, rounded, running
from contract.keys import LIVE, SYMBOLS_KEY, snapshot_key, symbol_tag, voucher_key
from contract.klines import HISTORY_TTL_MS, WRITE_SCRIPT, encode_row, klines_key, write_keys
from contract.records import encode_record
from tests.processes import Gunicorn, Process, RedisServer, http, wait_until
from tests.records import stream_state

SYMBOL, INTERVAL, LIMIT = "BTCUSDT", "1m", 1000
PATH = f"/api/v3/klines?symbol={SYMBOL}&interval={INTERVAL}&limit={LIMIT}"
INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
KEEP, CAP = 1000, 20_000  # the messenger's defaults: KLINE_HISTORY, KLINE_HISTORY_MAX
RUN = "bench"  # the voucher's messenger run id
VOUCHER_TTL_MS, VOUCHER_EVERY_S = 1000, 1 / 6
MEMORY_SERIES = 100
MEMORY_INTERVALS = ("1s", "1m", "1h", "1d")
WARM_UP_S = 2.0

# Counts every answer that is not a 200 with exactly the expected bytes; ``done`` prints the sums.
CHECK = """
local expected
checked, bad = 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local f = assert(io.open(args[1], "rb")); expected = f:read("*a"); f:close()
end
function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or body ~= expected then bad = bad + 1 end
end
function done(summary, latency, requests)
  local c, b = 0, 0
  for _, t in ipairs(threads) do c = c + t:get("checked"); b = b + t:get("bad") end
  io.write(string.format("checked %d bad %d\\n", c, b))
end
"""


def candles(n: int, interval: str, last_open: int, seed: int = 1) -> list[list[Any]]:
    """``n`` real-looking Binance rows of BTCUSDT-like prices, the newest opening at ``last_open``.

    Prices on a 0.01 tick and volumes on a 0.00001 step, both spelt with 8 decimals, as Binance does.
    """
    rng = random.Random(seed)
    step = INTERVAL_MS[interval]
    scale = max(1, step // 60_000)
    cents = 4_321_012  # 43,210.12
    rows: list[list[Any]] = []
    for i in range(n):
        opened = last_open - (n - 1 - i) * step
        prices = [cents] + [cents + rng.randint(-300, 300) for _ in range(3)]
        cents = prices[-1]
        volume = rng.randint(1, 2_000_000) * scale  # in 0.00001 BTC
        quote = volume * cents * 1000 + rng.randint(0, 99_999_999)  # in 1e-8 USDT
        taker = rng.randint(0, volume)
        trades = rng.randint(1, 3000) * scale
        rows.append([
            opened, _dec(prices[0] * 10**6), _dec(max(prices) * 10**6), _dec(min(prices) * 10**6),
            _dec(prices[-1] * 10**6), _dec(volume * 1000), opened + step - 1, _dec(quote), trades,
            _dec(taker * 1000), _dec(taker * cents * 1000), "0",
        ])  # fmt: skip
    return rows


def _dec(units: int) -> str:
    """An amount in 1e-8 units as Binance spells it: ``43210.12000000``."""
    return f"{units // 10**8}.{units % 10**8:08d}"


def keep(client: redis.Redis, symbol: str, interval: str, rows: list[list[Any]], keep_n: int = KEEP) -> int:
    """Seed a series through the contract's write script, as the messenger does."""
    args: list[Any] = ["seed", keep_n - 1, CAP, HISTORY_TTL_MS]
    for row in rows:
        args += [row[0], encode_row(row)]
    kept: int = client.eval(WRITE_SCRIPT, 3, *write_keys(interval, symbol), *args)
    return kept


def open_record(row: list[Any], now_ms: int) -> dict[str, Any]:
    """The kline stream's record of an open candle, as the messenger stores it (bar the voucher)."""
    return {
        "symbol": SYMBOL, "open_time": row[0], "close_time": row[6], "interval": INTERVAL,
        "first_trade_id": 1, "last_trade_id": row[8], "open": row[1], "high": row[2], "low": row[3],
        "close": row[4], "volume": row[5], "trades": row[8], "closed": False, "quote_volume": row[7],
        "taker_buy_base_volume": row[9], "taker_buy_quote_volume": row[10], "event_time": now_ms,
        "ts": now_ms, "as_of": now_ms, "source": "stream", "connection": 1,
    }  # fmt: skip


def fill(client: redis.Redis) -> bytes:
    """999 kept candles and a vouched open one; returns the answer Binance would give (1,000 rows)."""
    now_ms = int(time.time() * 1000)
    rows = candles(LIMIT, INTERVAL, now_ms - now_ms % INTERVAL_MS[INTERVAL])
    assert keep(client, SYMBOL, INTERVAL, rows[:-1]) == LIMIT - 1
    voucher = voucher_key(RUN, 1, symbol_tag(SYMBOL))
    client.set(voucher, now_ms, px=VOUCHER_TTL_MS)
    key = snapshot_key(f"kline_{INTERVAL}", SYMBOL)
    client.set(key, encode_record({"voucher": voucher, **open_record(rows[-1], now_ms)}))
    stream_state(client, key, LIVE)
    client.hset(SYMBOLS_KEY, SYMBOL, "TRADING")
    answer = b"[" + b",".join(encode_row(r) for r in rows) + b"]"
    client.set(BARE_KEY, answer)
    return answer


@contextmanager
def vouching(client: redis.Redis) -> Iterator[None]:
    """Keep the open candle's connection alive, as the messenger's writer does."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(VOUCHER_EVERY_S):
            client.set(voucher_key(RUN, 1, symbol_tag(SYMBOL)), int(time.time() * 1000), px=VOUCHER_TTL_MS)

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class BareApp(Gunicorn):
    """The baseline under the same gunicorn config, waited for on its own answer."""

    def __init__(self, log_dir: Path, redis_url: str) -> None:
        super().__init__(log_dir, redis_url, workers=None, app="bench.bare_klines:app")

    def start(self) -> None:
        """Start and wait until it answers 200."""
        Process.start(self)
        wait_until(lambda: http("GET", f"{self.url}{PATH}")[0] == 200, 20, what="the bare klines app")


def fetch(url: str) -> bytes:
    """One GET's body (raises on anything but 2xx)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def load(url: str, seconds: float, connections: int, check: tuple[Path, Path] | None) -> dict[str, float]:
    """One wrk run: requests/s, p50, p99, answers checked and wrong (not 200, other bytes, errors).

    ``check`` (the Lua script, the expected answer) compares every body; wrk then copies each one
    into Lua, which slows it down, so timed runs only count statuses and socket errors.
    """
    script = ["-s", str(check[0])] if check else []
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--latency", *script, url,
            *(["--", str(check[1])] if check else [])]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    row = parse_wrk(result.stdout)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", result.stdout)
    wrong = row.pop("non_2xx") + (sum(int(e) for e in errors.groups()) if errors else 0)
    row["checked"] = 0.0
    if check:
        checked = re.search(r"^checked (\d+) bad (\d+)$", result.stdout, re.MULTILINE)
        assert checked, result.stdout
        assert int(checked[1]) > 0, result.stdout
        row["checked"], wrong = float(checked[1]), wrong + int(checked[2])
    row["wrong"] = wrong
    return row


def serve(seconds: float = 10.0, connections: int = 50, repeats: int = 3) -> dict[str, Any]:
    """Medians over ``repeats`` alternating runs of the server and the bare app, and their ratio.

    Each run is preceded by a checked warm-up: every answer compared, byte for byte, with the
    expected 1,000 rows. The timed run counts every answer that is not a 200.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    runs: dict[str, list[dict[str, float]]] = {"server": [], "bare": []}
    checked = wrong = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        check = (logs / "check.lua", logs / "expected.json")
        check[0].write_text(CHECK)
        redis_server = RedisServer(logs)
        with running(redis_server):
            client = redis_server.client()
            answer = fill(client)
            check[1].write_bytes(answer)
            with vouching(client):
                for _ in range(repeats):
                    for name, app in (("server", Gunicorn(logs, redis_server.url, workers=None)),
                                      ("bare", BareApp(logs, redis_server.url))):  # fmt: skip
                        url = f"{app.url}{PATH}"
                        with running(app):
                            assert fetch(url) == answer, f"{name} answers otherwise"
                            warm = load(url, WARM_UP_S, connections, check)
                            timed = load(url, seconds, connections, None)
                        checked += warm["checked"]
                        wrong += warm["wrong"] + timed["wrong"]
                        runs[name].append({k: timed[k] for k in ("requests_per_s", "p50_ms", "p99_ms")})
                        time.sleep(0.5)  # let the port and the CPU settle
    server, bare = medians(runs["server"]), medians(runs["bare"])
    row: dict[str, Any] = {"connections": connections, "rows": LIMIT, "body_bytes": len(answer)}
    row.update({f"server_{k}": v for k, v in server.items()})
    row.update({f"bare_{k}": v for k, v in bare.items()})
    row["ratio_to_bare"] = server["requests_per_s"] / bare["requests_per_s"]
    row["answers_checked"], row["wrong_answers"] = int(checked), int(wrong)
    return row


def memory(intervals: tuple[str, ...] = MEMORY_INTERVALS) -> dict[str, Any]:
    """Bytes per kept candle: one series' MEMORY USAGE by interval, and 100 series' used_memory."""
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp))
        with running(redis_server):
            client = redis_server.client()
            now_ms = int(time.time() * 1000)
            row: dict[str, Any] = {}
            for interval in intervals:
                step = INTERVAL_MS[interval]
                rows = candles(KEEP, interval, now_ms - now_ms % step - step)
                assert keep(client, SYMBOL, interval, rows) == KEEP
                usage = client.memory_usage(klines_key(interval, SYMBOL), samples=0)
                assert usage is not None
                row[f"bytes_per_candle_{interval}"] = usage / KEEP
                row[f"row_bytes_{interval}"] = sum(len(encode_row(r)) for r in rows) / KEEP
            client.flushall()
            before = client.info("memory")["used_memory"]
            for n in range(MEMORY_SERIES):
                rows = candles(KEEP, "1m", now_ms - now_ms % 60_000 - 60_000, seed=n)
                assert keep(client, f"SYM{n:03d}USDT", "1m", rows) == KEEP
            after = client.info("memory")["used_memory"]
            row["series"] = MEMORY_SERIES
            row["used_memory_bytes_per_candle"] = (after - before) / (MEMORY_SERIES * KEEP)
            row["used_memory_mb_per_1000_series"] = (after - before) * 1000 / MEMORY_SERIES / 2**20
    return row


def run(seconds: float = 10.0, connections: int = 50, repeats: int = 3) -> dict[str, Any]:
    """Serving and memory, one row."""
    return {**serve(seconds, connections, repeats), **memory()}


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.klines", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args(argv)
    if args.memory_only:
        print(json.dumps(rounded(memory())))
    else:
        print(json.dumps(rounded(run(args.seconds, args.connections, args.repeats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
