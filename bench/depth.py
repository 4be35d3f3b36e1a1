"""Order books: ``GET /api/v3/depth?limit=1000`` under wrk beside a bare app returning the same bytes.

    python -m bench.depth [--seconds 10] [--connections 50] [--repeats 3]

A private Redis holds BTCUSDT's book as the messenger writes it (contract.order_book: one record,
the levels pre-encoded, written 1,000 levels deep as a request for 1,000 asks), with real-looking
levels (prices on a 0.01 tick, quantities with 8 decimals), vouched for by a connection whose
liveness key this benchmark keeps rewriting as the messenger's writer does. Two apps take turns
under gunicorn with the shipped config: the server, and ``bench/bare_depth.py``, which answers the
same bytes with one Redis GET of the ready answer. wrk drives each with the same connections in
every repeat; a checked warm-up compares every answer byte for byte (1,000 levels a side), and the
timed run counts every answer that is not a 200.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.bare_depth import KEY as BARE_KEY
from bench.klines import CHECK, RUN, WARM_UP_S, fetch, load, vouching
from bench.stack import medians, rounded, running
from contract.keys import LIVE, SYMBOLS_KEY, snapshot_key, symbol_tag, voucher_key
from contract.kinds import DEPTH
from contract.order_book import book_fields, level_bytes
from contract.records import AS_OF, TS, VOUCHER, encode_record
from tests.processes import Gunicorn, Process, RedisServer, http, wait_until
from tests.records import stream_state

SYMBOL, LIMIT = "BTCUSDT", 1000
PATH = f"/api/v3/depth?symbol={SYMBOL}&limit={LIMIT}"
VOUCHER_TTL_MS = 1000
UPDATE_ID = 41_920_153_866


def side(n: int, which: int, seed: int) -> list[bytes]:
    """``n`` levels of one side of a BTCUSDT-like book: bids down from 43,210.12, asks up from
    43,210.13, a tick or a few apart, quantities in 0.00001 steps spelt with 8 decimals."""
    rng = random.Random(seed)
    cents, sign = (4_321_012, -1) if which == 0 else (4_321_013, 1)
    out = []
    for _ in range(n):
        units = rng.randint(1, 5_000_000)  # 0.00001 BTC
        out.append(
            level_bytes(
                f"{cents // 100}.{cents % 100:02d}000000", f"{units // 100_000}.{units % 100_000:05d}000"
            )
        )
        cents += sign * rng.randint(1, 3)
    return out


def fill(client: redis.Redis) -> bytes:
    """BTCUSDT's book written 1,000 deep and vouched for; returns Binance's answer to PATH."""
    now_ms = int(time.time() * 1000)
    bids, asks = side(LIMIT, 0, 1), side(LIMIT, 1, 2)
    voucher = voucher_key(RUN, 1, symbol_tag(SYMBOL))
    client.set(voucher, now_ms, px=VOUCHER_TTL_MS)
    fields = book_fields(SYMBOL, UPDATE_ID, LIMIT, LIMIT, bids, asks, (False, False))
    record = {VOUCHER: voucher, **fields, TS: now_ms, AS_OF: now_ms, "source": "stream", "connection": 1}
    key = snapshot_key(DEPTH, SYMBOL)
    client.set(key, encode_record(record))
    stream_state(client, key, LIVE)
    client.hset(SYMBOLS_KEY, SYMBOL, "TRADING")
    answer = (
        b'{"lastUpdateId":' + str(UPDATE_ID).encode() + b',"bids":[' + b",".join(bids)
        + b'],"asks":[' + b",".join(asks) + b"]}"
    )  # fmt: skip
    client.set(BARE_KEY, answer)
    return answer


class BareApp(Gunicorn):
    """The baseline under the same gunicorn config, waited for on its own answer."""

    def __init__(self, log_dir: Path, redis_url: str) -> None:
        super().__init__(log_dir, redis_url, workers=None, app="bench.bare_depth:app")

    def start(self) -> None:
        """Start and wait until it answers 200."""
        Process.start(self)
        wait_until(lambda: http("GET", f"{self.url}{PATH}")[0] == 200, 20, what="the bare depth app")


def run(seconds: float = 10.0, connections: int = 50, repeats: int = 3) -> dict[str, Any]:
    """Medians over ``repeats`` alternating runs of the server and the bare app, and their ratio."""
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
    row: dict[str, Any] = {"connections": connections, "levels": LIMIT, "body_bytes": len(answer)}
    row.update({f"server_{k}": v for k, v in server.items()})
    row.update({f"bare_{k}": v for k, v in bare.items()})
    row["ratio_to_bare"] = server["requests_per_s"] / bare["requests_per_s"]
    row["answers_checked"], row["wrong_answers"] = int(checked), int(wrong)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.depth", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(rounded(run(args.seconds, args.connections, args.repeats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
