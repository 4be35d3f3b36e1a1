"""Live push of closed candles: from the exchange's close frame to the client's SSE event.

    python -m bench.closed_candles [--symbols 8] [--seconds 20] [--repeats 3]

The simulator (``--record``) keeps when it sent each ``"x": true`` kline frame; clients follow
``GET /stream/<SYMBOL>/kline_1s`` on the server and stamp each closed candle they receive. The
delay is receipt minus the simulator's send time of that very candle (one machine, one clock),
beside the delay of a plain Redis SUBSCRIBE on the same key in the same run: the server's share.
Target (issue 12): p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.stack import medians, percentile, redis_and_simulator, rounded, running
from contract.keys import snapshot_key
from tests.processes import EventStream, Gunicorn, Messenger, messenger_env, wait_until

SYMBOLS = ["BTCUSDT", "ETHBTC", "BNBBTC", "LTCBTC", "NEOBTC", "ETHUSDT", "BNBUSDT", "XRPBTC"]


def _closes(entries: list[list[Any]]) -> dict[tuple[str, int], int]:
    """(stream, open time) -> epoch ms the simulator sent its closing frame."""
    sent: dict[tuple[str, int], int] = {}
    for at_ms, stream, payload in entries:
        if payload and "@kline_" in stream and isinstance(payload, dict) and payload.get("k", {}).get("x"):
            sent.setdefault((stream, payload["k"]["t"]), at_ms)
    return sent


def run_once(symbols: int, seconds: float) -> dict[str, float]:
    """p50/p99 (ms) of the server's push and of a bare Redis subscriber, and what was missed."""
    names = SYMBOLS[:symbols]
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        redis_server, sim = redis_and_simulator(logs, "--record")
        env = messenger_env(sim, redis_server.url, LOG_LEVEL="WARNING")
        messenger = Messenger(logs, env, *[n.lower() for n in names], "--streams", "bookTicker,kline_1s")
        gunicorn = Gunicorn(logs, redis_server.url, workers=None)
        with running(redis_server, sim, messenger, gunicorn):
            client = redis_server.client()
            wait_until(lambda: all(client.exists(snapshot_key("kline_1s", n)) for n in names), 30)
            streams = [EventStream(f"{gunicorn.url}/stream/{n}/kline_1s") for n in names]
            bare = client.pubsub(ignore_subscribe_messages=True)
            bare.subscribe(*[snapshot_key("kline_1s", n) for n in names])
            got: dict[str, list[tuple[str, int, int]]] = {"push": [], "redis": []}
            stop = threading.Event()

            def read_bare() -> None:
                while not stop.is_set():
                    message = bare.get_message(timeout=0.2)
                    if message is not None and message["data"]:
                        record = orjson.loads(message["data"])
                        if record.get("closed"):
                            at = int(time.time() * 1000)
                            got["redis"].append((record["symbol"], record["open_time"], at))

            reader = threading.Thread(target=read_bare, daemon=True)
            reader.start()
            cursor = sim.recorded()["next"]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for stream in streams:
                    while not stream.events.empty():
                        event = stream.events.get_nowait()
                        at = int(time.time() * 1000)
                        if event.get("event") == "snapshot":
                            record = orjson.loads(event["data"])
                            if record.get("closed"):
                                got["push"].append((record["symbol"], record["open_time"], at))
                time.sleep(0.001)
            stop.set()
            reader.join()
            for stream in streams:
                stream.close()
            bare.close()
            entries = []
            while True:
                dump = sim.recorded(cursor)
                entries += dump["entries"]
                if not dump["entries"]:
                    break
                cursor = dump["next"]
    sent = _closes(entries)
    delays: dict[str, list[float]] = {}
    for name, seen in got.items():
        delays[name] = [
            float(at - sent[(f"{symbol.lower()}@kline_1s", opened)])
            for symbol, opened, at in seen
            if (f"{symbol.lower()}@kline_1s", opened) in sent
        ]
    expected = sum(1 for (stream, _), at in sent.items() if stream.endswith("@kline_1s"))
    return {
        "closed_sent": float(expected),
        "push_received": float(len(delays["push"])),
        "push_p50_ms": percentile(delays["push"], 50),
        "push_p99_ms": percentile(delays["push"], 99),
        "redis_p50_ms": percentile(delays["redis"], 50),
        "redis_p99_ms": percentile(delays["redis"], 99),
    }


def run(symbols: int = 8, seconds: float = 20.0, repeats: int = 3) -> dict[str, Any]:
    """Medians over ``repeats`` runs."""
    return {"symbols": symbols, **medians([run_once(symbols, seconds) for _ in range(repeats)])}


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.closed_candles", description=__doc__)
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(rounded(run(args.symbols, args.seconds, args.repeats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
