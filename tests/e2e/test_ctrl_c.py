"""Ctrl-C on each process run by hand, as the README runs them: a clean stop, no traceback.

A terminal's Ctrl-C is SIGINT to the whole foreground process group: gunicorn's master and its
gevent workers get it at once (gunicorn's own worker then ends with ``sys.exit`` in a greenlet,
which gevent printed as two tracebacks per worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.keys import LIVE, SYMBOLS_KEY, snapshot_key
from tests.processes import AS_FROM_A_TERMINAL, ROOT, EventStream, RedisServer, free_port, http, wait_until
from tests.records import stream_state, vouched

WORKERS = 2


@pytest.mark.parametrize("module", ["server", "simulator"])
def test_ctrl_c_stops_a_process_run_by_hand_without_a_traceback(
    module: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_server.url, "LOG_LEVEL": "INFO",
           "WEB_CONCURRENCY": str(WORKERS)}  # fmt: skip
    argv = [sys.executable, "-m", module] + (["--port", str(port)] if module == "simulator" else [])
    log = tmp_path / f"{module}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*AS_FROM_A_TERMINAL, *argv], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        path = "/healthz" if module == "server" else "/api/v3/ping"
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}{path}")[0] == 200, 30, 0.1)
        if module == "server":  # a user presses Ctrl-C once it runs, not while workers boot
            booted = lambda: log.read_text(errors="replace").count("Booting worker") == WORKERS  # noqa: E731
            wait_until(booted, 30, 0.1, what="every worker to boot")
            wait_until(
                lambda: all(http("GET", f"http://127.0.0.1:{port}{path}")[0] == 200 for _ in range(20)), 10
            )
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(log.read_text(errors="replace")[-4000:]) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]


def test_ctrl_c_while_the_workers_boot_stops_the_server_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Ctrl-C the moment gunicorn says a worker is booting (before gevent's patching is done and
    the worker's own handlers are set): the server still stops within seconds, not after the
    arbiter's 30 s graceful timeout for a worker that never heard the signal."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_server.url, "LOG_LEVEL": "INFO",
           "WEB_CONCURRENCY": str(WORKERS)}  # fmt: skip
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        argv = [*AS_FROM_A_TERMINAL, sys.executable, "-m", "server"]
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: log.read_text(errors="replace").count("Booting worker") == WORKERS, 30, 0.001)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError(log.read_text(errors="replace")[-4000:]) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_graceful_stop_does_not_wait_for_live_push_clients(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """SIGTERM (what run-local and compose send): a stream a client follows ends within a moment,
    its HTTP response properly closed, so the stop does not hang on it until it is killed."""
    client = redis_server.client()
    key = snapshot_key("bookticker", "BTCUSDT")
    client.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING"})
    stream_state(client, key, LIVE)
    vouched(client, key, {"symbol": "BTCUSDT", "bid_price": "1.0", "bid_quantity": "1.0",
                          "ask_price": "1.1", "ask_quantity": "1.0", "update_id": 1,
                          "ts": int(time.time() * 1000), "as_of": int(time.time() * 1000)})  # fmt: skip
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "1"}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    stream = None
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, 0.1)
        stream = EventStream(f"http://127.0.0.1:{port}/stream/BTC_USDT")
        assert stream.status == 200
        stream.next(5, lambda e: e.get("event") == "snapshot")
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        stream._reader.join(10)
        ended_after = time.monotonic() - started
        assert not stream._reader.is_alive(), "the stream was still open 10 s after SIGTERM"
        proc.wait(10)
        stopped_after = time.monotonic() - started
    finally:
        if stream is not None:
            stream.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    print(f"stream ended {ended_after:.2f} s, server stopped {stopped_after:.2f} s after SIGTERM")
    assert ended_after < 2.0 and stopped_after < 5.0
    assert "Traceback" not in log.read_text(errors="replace")
