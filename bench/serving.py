"""Serving: requests a second and latency of ``POST /snapshot/BTC_USDT`` under load, with wrk.

    python -m bench.serving [--seconds 10] [--connections 50] [--repeats 3]

The messenger streams BTCUSDT from the simulator into a private Redis. Two apps take turns under
gunicorn with the shipped config (same workers, same gevent worker class): the server, and the
baseline, a bare WSGI app doing one Redis GET per request (``bench/bare_wsgi.py``). wrk (Debian
package ``wrk``) drives each with the same number of connections, in every repeat.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import medians, redis_and_simulator, rounded, running
from contract.keys import snapshot_key
from tests.processes import Gunicorn, Messenger, Process, http, messenger_env, wait_until

POST = 'wrk.method = "POST"\n'
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class BareApp(Gunicorn):
    """The baseline app under the same gunicorn config as the server (answering with ``key``'s
    value: by default the server's BTCUSDT bookTicker record)."""

    def __init__(self, log_dir: Path, redis_url: str, key: str = "") -> None:
        super().__init__(log_dir, redis_url, workers=None, app="bench.bare_wsgi:app", bare_key=key)

    def start(self) -> None:
        """Start and wait until it answers (it has no 400 for Gunicorn.start to wait for)."""
        Process.start(self)
        wait_until(lambda: http("POST", f"{self.url}/snapshot/BTC_USDT")[0] == 200, 20, what="the bare app")


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) and non-2xx answers from ``wrk --latency``'s report."""

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, f"no {label} in wrk's output:\n{output}"
        return float(match[1]) * UNITS[match[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    assert rps, output
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "requests_per_s": float(rps[1]),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": float(errors[1]) if errors else 0.0,
    }


def load(url: str, seconds: float, connections: int, script: Path) -> dict[str, float]:
    """One wrk run against ``url``."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "-s", str(script), url]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    return parse_wrk(result.stdout)


def run(seconds: float = 10.0, connections: int = 50, repeats: int = 3) -> dict[str, Any]:
    """Medians over ``repeats`` alternating runs, and the server's ratio to the baseline."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        script = logs / "post.lua"
        script.write_text(POST)
        redis_server, sim = redis_and_simulator(logs)
        messenger = Messenger(logs, messenger_env(sim, redis_server.url, LOG_LEVEL="WARNING"), "btcusdt")
        runs: dict[str, list[dict[str, float]]] = {"server": [], "bare": []}
        with running(redis_server, sim, messenger):
            client = redis_server.client()
            wait_until(
                lambda: client.exists(snapshot_key("bookticker", "btcusdt")), 20, what="BTCUSDT in Redis"
            )
            for _ in range(repeats):
                for name, app in (("server", Gunicorn(logs, redis_server.url, workers=None)),
                                  ("bare", BareApp(logs, redis_server.url))):  # fmt: skip
                    with running(app):
                        load(f"{app.url}/snapshot/BTC_USDT", 2, connections, script)  # warm up
                        runs[name].append(load(f"{app.url}/snapshot/BTC_USDT", seconds, connections, script))
                    time.sleep(0.5)  # let the port and the CPU settle
    server, bare = medians(runs["server"]), medians(runs["bare"])
    row: dict[str, Any] = {"connections": connections}
    row.update({f"server_{k}": v for k, v in server.items()})
    row.update({f"bare_{k}": v for k, v in bare.items()})
    row["ratio_to_bare"] = server["requests_per_s"] / bare["requests_per_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(rounded(run(args.seconds, args.connections, args.repeats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
